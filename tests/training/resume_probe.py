"""Run by test_optimizer_state.py in a subprocess (DeepSpeed needs a process group):

    python tests/training/resume_probe.py MODEL_DIR WORK_DIR DTYPE ZERO_STAGE

Engine A takes two AdamW steps, writes its policy (`hf/`) and optimizer state (`optim/`),
then takes a third step. Engine B is built from `hf/`, restores `optim/` and takes the
same third step; engine C takes it from `hf/` alone. Writes WORK_DIR/result.json: the
largest difference of B's and C's weights from A's after the third step.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from a2tgpo.config import TrainConfig
from a2tgpo.training.engine import build_engine, init_distributed
from a2tgpo.training.export import export_hf, iter_full_parameters
from a2tgpo.training.optimizer_state import load_optimizer_state, save_optimizer_state


def step(engine, seed: int) -> None:
    vocab = engine.module.config.vocab_size
    ids = torch.randint(3, vocab, (2, 24), generator=torch.Generator().manual_seed(seed))
    loss = engine(input_ids=ids, labels=ids, use_cache=False).loss
    engine.backward(loss)
    engine.step()


def weights(engine) -> dict[str, torch.Tensor]:
    return dict(iter_full_parameters(engine.module, torch.float32))


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def main(model_dir: str, work: str, dtype_name: str, stage: int) -> None:
    init_distributed()
    dtype = getattr(torch, dtype_name)
    train = TrainConfig(zero_stage=stage, learning_rate=1e-3)
    out = Path(work)
    a = build_engine(model_dir, train, dtype)
    step(a, 1)
    step(a, 2)
    export_hf(a.module, model_dir, out / "hf", dtype=dtype, write=True)
    save_optimizer_state(a, out / "optim", write=True)
    step(a, 3)
    b = build_engine(str(out / "hf"), train, dtype)
    resumed_step = load_optimizer_state(b, out / "optim")
    step(b, 3)
    c = build_engine(str(out / "hf"), train, dtype)
    step(c, 3)
    wa = weights(a)
    result = {
        "step": resumed_step,
        "resumed": largest_difference(wa, weights(b)),
        "fresh": largest_difference(wa, weights(c)),
        "files": sorted(p.name for p in (out / "optim").iterdir()),
    }
    (out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
