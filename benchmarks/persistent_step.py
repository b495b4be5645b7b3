"""Train-step wall time: the persistent trainer against a new launch per step.

    python3 benchmarks/persistent_step.py            # GPU: ~0.5B random Qwen2, bf16
    .venv/bin/python benchmarks/persistent_step.py --tiny     # CPU smoke run (gloo)

Runs the project's own path (`launcher.train_and_commit`: job, DeepSpeed ZeRO-3 ranks,
commit of the checkpoint with its optimizer state) for `--steps` consecutive steps, each
from the last one's committed checkpoint, once with a new launch per step (torchrun on
a GPU) and once on a `PersistentTrainer`; on a GPU also with
`pipeline.release_trainer_memory` (DeepSpeed `offload_states` between steps), reporting
the device memory free between steps. Per step: wall, start-up (process, process
group, engine build, checkpoint load) and compute. Last line:
`subprocess_step_s=<x> persistent_step_s=<y> speedup=<x/y>` (means over steps 2..N,
the steady state).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

from benchmarks.gpu_shapes import QWEN25_05B, TINY


def setup(root: Path, tiny: bool, rows: int, tokens: int):
    """A config, a committed random policy and an advantaged dataset in local storage."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from a2tgpo.config import RunConfig
    from a2tgpo.data.directories import commit_directory
    from a2tgpo.data.fakes import fake_trajectories
    from a2tgpo.data.stage import write_stage
    from a2tgpo.data.storage import Storage

    gpu = torch.cuda.is_available() and not tiny
    shape = TINY if tiny else QWEN25_05B
    model_dir = root / "model"
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**shape, max_position_embeddings=4096))
    model.to(torch.bfloat16 if gpu else torch.float32).save_pretrained(model_dir)
    config = RunConfig(
        storage={"root": str(root / "store")},
        model={"dtype": "bfloat16" if gpu else "float32"},
        train={"num_gpus": 1 if gpu else 0, "micro_batch_tokens": 4 * tokens, "mini_batches": 2},
    )
    storage = Storage(config.storage)
    init = storage.join("init")
    commit_directory(storage, model_dir, init, policy_version=0)
    table = fake_trajectories(
        rows, tokens=tokens, turns=3, schema_name="advantaged", vocab=shape["vocab_size"], seed=1
    )
    data = storage.join("adv")
    write_stage(storage, data, table, "advantaged", policy_version=0)
    return config, storage, init, data


def free_gib() -> float:
    return torch.cuda.mem_get_info()[0] / 2**30 if torch.cuda.is_available() else float("nan")


def steps(config, storage, init, data, label: str, count: int, trainer=None) -> list[dict]:
    from a2tgpo.training.launcher import train_and_commit

    policy, rows = init, []
    for version in range(1, count + 1):
        out = storage.join(label, f"step{version}")
        start = time.perf_counter()
        manifest = train_and_commit(
            config, advantaged_uri=data, policy_uri=policy, out_uri=out,
            policy_version=version, trainer=trainer,
        )  # fmt: skip
        timing = manifest.stats["timing"]
        rows.append(
            {
                "wall_s": time.perf_counter() - start,
                "startup_s": timing["startup_s"],
                "compute_s": manifest.stats["metrics"]["time/train_compute_s"],
                "free_gib_after": free_gib(),
            }
        )
        print(f"{label} step {version}: {rows[-1]}", flush=True)
        policy = out
    return rows


def steady(rows: list[dict]) -> float:
    tail = rows[1:] or rows
    return sum(r["wall_s"] for r in tail) / len(tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run, tiny model")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=1024)
    args = parser.parse_args()
    from a2tgpo.training.persistent import PersistentTrainer

    with tempfile.TemporaryDirectory(prefix="bench-persistent-") as tmp:
        config, storage, init, data = setup(Path(tmp), args.tiny, args.rows, args.tokens)
        results = {"subprocess": steps(config, storage, init, data, "sub", args.steps)}
        with PersistentTrainer(config) as trainer:
            results["persistent"] = steps(config, storage, init, data, "keep", args.steps, trainer)
        if torch.cuda.is_available() and not args.tiny:
            released = config.model_copy(
                update={
                    "pipeline": config.pipeline.model_copy(update={"release_trainer_memory": True})
                }
            )
            with PersistentTrainer(released) as trainer:
                results["released"] = steps(
                    released, storage, init, data, "rel", args.steps, trainer
                )
    for label, rows in results.items():
        print(f"{label}: steady step {steady(rows):.2f} s, free GiB after steps "
              f"{[round(r['free_gib_after'], 1) for r in rows]}")  # fmt: skip
    sub, keep = steady(results["subprocess"]), steady(results["persistent"])
    print(f"subprocess_step_s={sub:.2f} persistent_step_s={keep:.2f} speedup={sub / keep:.2f}")


if __name__ == "__main__":
    main()
