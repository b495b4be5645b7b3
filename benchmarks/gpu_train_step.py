"""One ZeRO-3 bf16 training step of a ~0.5B random Qwen2 on one GPU: tokens/s and MFU.

    python3 benchmarks/gpu_train_step.py            # on the GPU machine (see gpu_check.sh)
    python3 benchmarks/gpu_train_step.py --tiny     # a CPU smoke test of the same path

Runs the project's own update (`a2tgpo.training.update.run_update`: the A²TGPO loss,
DeepSpeed engine from `a2tgpo.training.engine`) on synthetic micro-batches, and, as the
baseline in the same process, a plain torch step (fused AdamW, same model and batch,
HF's own loss). MFU counts 6 x params + 12 x layers x hidden x sequence FLOPs per
token against 989 TFLOP/s (H100 bf16 dense). Prints a table and, last,
`zero3_tokens_per_s=<x> zero3_mfu=<y> plain_tokens_per_s=<z>`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

from benchmarks.gpu_shapes import QWEN25_05B, TINY

PEAK_FLOPS = 989e12


def random_model_dir(shape: dict, dtype: torch.dtype, folder: str) -> str:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**shape, max_position_embeddings=4096, tie_word_embeddings=True)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).to(dtype).save_pretrained(folder)
    return folder


def micro_batches(rows: int, seq: int, vocab: int, count: int):
    from a2tgpo.training.batching import Sample, make_micro_batch

    rng = np.random.default_rng(0)
    batches = []
    for b in range(count):
        samples = []
        for i in range(rows):
            mask = np.ones(seq, bool)
            mask[:16] = False  # a prompt
            samples.append(
                Sample(
                    index=b * rows + i,
                    tokens=rng.integers(0, vocab, seq),
                    mask=mask,
                    advantage=rng.normal(size=seq).astype(np.float32),
                    eps_low=np.full(seq, 0.2, np.float32),
                    eps_high=np.full(seq, 0.2, np.float32),
                    turn_ids=np.where(mask, 0, -1),
                    rollout_logprobs=None,
                )
            )
        batches.append(make_micro_batch(samples))
    return batches


def flops_per_token(model, shape: dict, seq: int) -> float:
    params = sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in model.parameters())
    return 6 * params + 12 * shape["num_hidden_layers"] * shape["hidden_size"] * seq


def plain_step_rate(model_dir: str, device: str, dtype, batch, steps: int) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device == "cuda")
    ids = batch.input_ids.to(device)

    def step():
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    rate = _rate(step, ids.numel(), steps, device)
    if device == "cuda":  # the ZeRO-3 run after this needs the memory back
        opt.state.clear()
        model.to("cpu")
        torch.cuda.empty_cache()
    return rate


def _rate(step, tokens: int, steps: int, device: str) -> float:
    step()  # warm-up
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return tokens * steps / (time.perf_counter() - start)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def zero3_rate(model_dir: str, dtype, batches, steps: int, shape: dict) -> tuple[float, float]:
    from a2tgpo.config import TrainConfig
    from a2tgpo.training.engine import build_engine, init_distributed
    from a2tgpo.training.update import frozen_logprobs, run_update

    init_distributed()
    train = TrainConfig(zero_stage=3, mini_batches=1, ppo_epochs=1, learning_rate=1e-5)
    engine = build_engine(model_dir, train, dtype)
    old = frozen_logprobs(engine, batches)
    run_update(engine, batches[:1], old, None, train, 0, 1)  # warm-up step
    _sync("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    for mb in batches[1 : steps + 1]:
        run_update(engine, [mb], old, None, train, 0, 1)
    _sync("cuda" if torch.cuda.is_available() else "cpu")
    rate = batches[0].num_tokens * steps / (time.perf_counter() - start)
    return rate, rate * flops_per_token(
        engine.module, shape, batches[0].input_ids.shape[1]
    ) / PEAK_FLOPS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (CPU smoke test)")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda:
        os.environ["DS_ACCELERATOR"] = "cpu"
    shape = TINY if args.tiny else QWEN25_05B
    rows, seq = (2, 128) if args.tiny else (8, 2048)
    dtype = torch.bfloat16 if cuda else torch.float32
    device = "cuda" if cuda else "cpu"
    with tempfile.TemporaryDirectory() as folder:
        model_dir = random_model_dir(shape, dtype, folder)
        batches = micro_batches(rows, seq, shape["vocab_size"], args.steps + 1)
        plain = plain_step_rate(model_dir, device, dtype, batches[0], args.steps)
        zero3, mfu = zero3_rate(model_dir, dtype, batches, args.steps, shape)
    name = torch.cuda.get_device_name() if cuda else "cpu"
    print(f"device {name}; {rows} x {seq} tokens per step; dtype {dtype}")
    print(f"{'step':<34}{'tokens/s':>12}{'MFU':>8}")
    print(f"{'plain torch (fused AdamW)':<34}{plain:>12.0f}")
    print(f"{'A²TGPO loss, DeepSpeed ZeRO-3':<34}{zero3:>12.0f}{mfu:>8.1%}")
    print(f"zero3_vs_plain={zero3 / plain:.2f}")
    print(f"zero3_tokens_per_s={zero3:.0f} zero3_mfu={mfu:.4f} plain_tokens_per_s={plain:.0f}")


if __name__ == "__main__":
    main()
