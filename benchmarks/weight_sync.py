"""Weight hand-off from the trainer to a running vLLM engine: three ways, timed.

    .venv/bin/python benchmarks/weight_sync.py

For the tiny model (2 x 128) and a mid-size one (8 x 512), starting from policy A and
moving the engine to policy B:

- restart:  close the engine, start a new one from B's folder (the baseline: a stage
            in its own pod);
- reload:   `VLLMEngine.reload_weights(B)` in place (the workers read B's shards);
- stream:   a DeepSpeed ZeRO-3 engine in this process gathers one parameter at a
            time and `VLLMEngine.load_weights` pushes layer-aligned buckets.

Each is checked against HF's teacher-forced log-probs of B (max |diff| printed).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from a2tgpo.engines import make_engine
from a2tgpo.engines.hf_engine import HFEngine
from a2tgpo.engines.tiny_model import build_tiny_model

TEXTS = [
    "<search> Alice Smith</search> <information>Alice was born in Paris.</information>",
    "<answer> Paris</answer> Who founded Brimex? Where was Bob Brown born?",
] * 50
SEQS = [list(range(5, 120)), list(range(40, 90))]


def models(work: Path, hidden: int, layers: int) -> tuple[Path, Path]:
    a = build_tiny_model(
        work / f"a{hidden}", TEXTS, hidden=hidden, layers=layers, heads=hidden // 64, seed=1
    )
    b = build_tiny_model(
        work / f"b{hidden}", TEXTS, hidden=hidden, layers=layers, heads=hidden // 64, seed=2
    )
    return a, b


def error(engine, reference) -> float:
    got = engine.prompt_logprobs(SEQS, [1, 1])
    return max(float(np.abs(x - y).max()) for x, y in zip(got, reference, strict=True))


def zero3_engine(model_dir: Path):
    from a2tgpo.config import TrainConfig
    from a2tgpo.training.engine import build_engine, init_distributed

    if not torch.distributed.is_initialized():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        init_distributed()
    return build_engine(str(model_dir), TrainConfig(zero_stage=3), torch.float32)


def main() -> None:
    from a2tgpo.training.export import iter_full_parameters

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for hidden, layers in ((128, 2), (512, 8)):
            a, b = models(Path(tmp), hidden, layers)
            reference = HFEngine(b).prompt_logprobs(SEQS, [1, 1])
            options = {"max_model_len": 512, "kv_cache_gib": 0.25}
            engine = make_engine("vllm", a, **options)
            start = time.perf_counter()
            engine.close()
            engine = make_engine("vllm", b, **options)
            restart = time.perf_counter() - start
            restart_err = error(engine, reference)
            engine.reload_weights(a)
            start = time.perf_counter()
            engine.reload_weights(b)
            reload = time.perf_counter() - start
            reload_err = error(engine, reference)
            engine.reload_weights(a)
            trainer = zero3_engine(b)
            start = time.perf_counter()
            buckets = engine.load_weights(
                iter_full_parameters(trainer.module), bucket_bytes=8 << 20
            )
            stream = time.perf_counter() - start
            stream_err = error(engine, reference)
            engine.close()
            params = sum(p.numel() for p in trainer.module.parameters() if p.numel()) or sum(
                p.ds_numel for p in trainer.module.parameters()
            )
            rows.append(
                (
                    f"{layers}x{hidden}",
                    params,
                    restart,
                    restart_err,
                    reload,
                    reload_err,
                    stream,
                    stream_err,
                    buckets,
                )
            )
            del trainer
    print(
        f"{'model':<8}{'params':>10}{'restart s':>11}{'reload s':>10}{'stream s':>10}"
        f"{'buckets':>9}{'max|err|':>10}"
    )
    for name, params, rs, re_, rl, rle, st, ste, nb in rows:
        print(
            f"{name:<8}{params:>10,}{rs:>11.2f}{rl:>10.3f}{st:>10.3f}{nb:>9}"
            f"{max(re_, rle, ste):>10.1e}"
        )
    name, _, rs, _, rl, _, st, _, _ = rows[-1]
    print(f"restart_vs_reload={rs / rl:.0f} restart_vs_stream={rs / st:.0f} ({name})")


if __name__ == "__main__":
    main()
