"""Throughput of the train-step stage: DeepSpeed ZeRO-3 on CPU vs a plain torch loop.

    .venv/bin/python benchmarks/train_step.py [--rows 64] [--tokens 256]

Builds the tiny model (the embedded default: 2 layers x 128 hidden), a synthetic
advantaged dataset, and runs (a) the real stage (`run_train_step`: worker subprocess,
ZeRO-3, gloo, fp32) and (b) the same A²TGPO loss with torch AdamW in this process, on
the same micro-batches. Prints both rates and their ratio; the last line is
`tokens_per_s=<ZeRO-3 stage rate>` (trained tokens / update seconds, start-up excluded;
the stage's wall time including start-up is printed above it).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from a2tgpo.config import RunConfig
from a2tgpo.data.directories import commit_directory
from a2tgpo.data.fakes import fake_trajectories
from a2tgpo.data.stage import read_stage, write_stage
from a2tgpo.data.storage import Storage
from a2tgpo.engines.tiny_model import build_tiny_model
from a2tgpo.stages.prepare import environment_texts
from a2tgpo.stages.train_step import run_train_step
from a2tgpo.training.batching import pack, samples_from_table, split_mini_batches
from a2tgpo.training.update import frozen_logprobs, micro_batch_loss


class _Plain:
    """The minimum of a DeepSpeed engine's surface that `micro_batch_loss` uses."""

    def __init__(self, model):
        self.module = model

    def __call__(self, **kwargs):
        return self.module(**kwargs)


def plain_torch_rate(model_dir: Path, table, config: RunConfig) -> tuple[float, int]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.learning_rate)
    batches, _ = pack(samples_from_table(table), config.train.micro_batch_tokens)
    old = frozen_logprobs(model, batches)
    start, tokens = time.perf_counter(), 0
    for _ in range(config.train.ppo_epochs):
        for group in split_mini_batches(batches, config.train.mini_batches):
            denominator = float(sum(mb.loss_tokens for mb in group))
            for mb in group:
                loss, stats = micro_batch_loss(
                    _Plain(model), mb, old[id(mb)], None, config.train, denominator
                )
                loss.backward()
                tokens += stats["tokens"]
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
            optimizer.step()
            optimizer.zero_grad()
    return tokens / (time.perf_counter() - start), tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        config = RunConfig(
            storage={"root": work},
            model={"dtype": "float32"},
            train={"ppo_epochs": 2, "mini_batches": 2},
        )
        storage = Storage(config.storage)
        model_dir = build_tiny_model(Path(work) / "tiny", environment_texts(config))
        vocab = len(AutoTokenizer.from_pretrained(model_dir))
        table = fake_trajectories(
            args.rows, tokens=args.tokens, turns=3, schema_name="advantaged", vocab=vocab
        )
        data, init = storage.join("adv"), storage.join("init")
        write_stage(storage, data, table, "advantaged", policy_version=0)
        commit_directory(storage, model_dir, init, policy_version=0)
        start = time.perf_counter()
        stats = run_train_step(
            config,
            advantaged_uri=data,
            policy_uri=init,
            out_uri=storage.join("ckpt"),
            policy_version=1,
        ).stats
        wall = time.perf_counter() - start
        plain, tokens = plain_torch_rate(model_dir, read_stage(storage, data), config)
    ds = stats["tokens_per_s"]
    print(f"{args.rows} trajectories x ~{args.tokens} tokens, {tokens} trained tokens per pass set")
    print(f"{'engine':<28}{'tokens/s':>10}")
    print(
        f"{'DeepSpeed ZeRO-3 (worker)':<28}{ds:>10.0f}   stage wall {wall:.1f} s (start-up included)"
    )
    print(f"{'plain torch AdamW':<28}{plain:>10.0f}")
    print(f"zero3_vs_plain={ds / plain:.2f}")
    print(f"tokens_per_s={ds:.0f}")


if __name__ == "__main__":
    main()
