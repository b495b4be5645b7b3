"""Run by tests/training/test_persistent_trainer.py in its own process (DeepSpeed on CPU):
two ZeRO-3 engines from one model take the same updates, one of them with its states
offloaded (`offload_engine_states`) and reloaded between them; prints `equal=<bool>`.

    python tests/training/offload_probe.py MODEL_DIR
"""

from __future__ import annotations

import os
import sys

os.environ["DS_ACCELERATOR"] = "cpu"

import torch
from transformers import AutoConfig

from a2tgpo.config import TrainConfig
from a2tgpo.data.fakes import fake_trajectories
from a2tgpo.training.batching import pack, samples_from_table
from a2tgpo.training.engine import build_engine, init_distributed, offload_engine_states
from a2tgpo.training.update import frozen_logprobs, run_update


def main(model_dir: str) -> None:
    init_distributed()
    train = TrainConfig(micro_batch_tokens=512, mini_batches=1, learning_rate=1e-3)
    vocab = AutoConfig.from_pretrained(model_dir).vocab_size
    table = fake_trajectories(8, tokens=96, turns=3, schema_name="advantaged", vocab=vocab, seed=1)
    batches, _ = pack(samples_from_table(table), train.micro_batch_tokens)
    kept, moved = (
        build_engine(model_dir, train, torch.float32),
        build_engine(model_dir, train, torch.float32),
    )
    for step in range(2):
        for engine in (kept, moved):
            old = frozen_logprobs(engine, batches)
            run_update(engine, batches, old, None, train, 0, 1)
        if step == 0:
            offload_engine_states(moved, pin_memory=False)
            assert moved.optimizer.offloaded_states, "nothing was marked offloaded"
            moved.reload_states()
    pairs = zip(
        kept.optimizer.fp32_partitioned_groups_flat,
        moved.optimizer.fp32_partitioned_groups_flat,
        strict=True,
    )
    print(f"equal={all(torch.equal(a, b) for a, b in pairs)}")


if __name__ == "__main__":
    main(sys.argv[1])
