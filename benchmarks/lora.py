"""LoRA against full fine-tuning: parameters, optimizer state, checkpoint bytes, speed.

    .venv/bin/python benchmarks/lora.py [--steps 4] [--rank 8] [--json out.json]

1. Computed (no weights are made: models built on the meta device from their configs):
   trainable parameters, AdamW state and checkpoint bytes as this project writes them,
   for the embedded tiny model and for Qwen2.5-7B (bf16 training: 12 B of fp32 state per
   trained weight, i.e. Adam's two moments + the fp32 master copy; a checkpoint holds the
   bf16 weights or the fp32 adapter, plus that state).
2. Measured on this machine, in one process on the same advantaged batch: train steps of
   the project's own path (`launcher.train_and_commit` on a `PersistentTrainer`, ZeRO-3 on
   CPU, fp32) with every weight trained and with LoRA, alternating, for two model shapes
   (the embedded tiny one and a 4-layer, 512-wide one). Per step: the update's tokens/s,
   and the bytes of each committed checkpoint part. Last line:
   `lora_vs_full_tokens_per_s=<tiny> <small> lora_vs_full_checkpoint_bytes=<tiny> <small>`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

from benchmarks.gpu_shapes import QWEN25_7B, SMALL, TINY

STATE_BYTES = 12  # AdamW exp_avg + exp_avg_sq + fp32 master, per trained weight (bf16)


def meta_model(shape: dict):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    with torch.device("meta"):
        return Qwen2ForCausalLM(Qwen2Config(**shape))


def counts(shape: dict, rank: int) -> dict[str, float]:
    """Parameters, and bytes of optimizer state and checkpoint, full vs LoRA (every linear
    layer of the decoder, as model.lora's default targets)."""
    from a2tgpo.config_lora import QWEN_LINEAR_MODULES

    model = meta_model(shape)
    total = sum(p.numel() for p in model.parameters())
    lora = sum(
        rank * (m.in_features + m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in QWEN_LINEAR_MODULES
    )
    return {
        "params": total,
        "lora_params": lora,
        "lora_share": lora / total,
        "full_optim_bytes": STATE_BYTES * total,
        "lora_optim_bytes": STATE_BYTES * lora,
        "full_checkpoint_bytes": (2 + STATE_BYTES) * total,  # bf16 weights + state
        "lora_checkpoint_bytes": (4 + STATE_BYTES) * lora,  # fp32 adapter + state
    }


def setup(root: Path, shape: dict, rank: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from a2tgpo.config import RunConfig
    from a2tgpo.data.directories import commit_directory
    from a2tgpo.data.fakes import fake_trajectories
    from a2tgpo.data.stage import write_stage
    from a2tgpo.data.storage import Storage

    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(**shape)).save_pretrained(root / "model")
    full = RunConfig(
        storage={"root": str(root / "store")},
        model={"dtype": "float32"},
        train={"micro_batch_tokens": 4096, "mini_batches": 2, "learning_rate": 1e-4},
    )
    lora = full.model_copy(
        update={"model": full.model.model_copy(update={"lora": {"rank": rank}})}, deep=True
    )
    lora = type(full).model_validate(lora.model_dump())
    storage = Storage(full.storage)
    commit_directory(storage, root / "model", storage.join("init"), policy_version=0)
    table = fake_trajectories(
        32, tokens=512, turns=3, schema_name="advantaged", vocab=shape["vocab_size"], seed=1
    )
    write_stage(storage, storage.join("adv"), table, "advantaged", policy_version=0)
    return {"full": full, "lora": lora}, storage


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def measure(shape: dict, rank: int, steps: int) -> dict:
    from a2tgpo.data.directories import materialize
    from a2tgpo.training.launcher import train_and_commit
    from a2tgpo.training.persistent import PersistentTrainer

    with tempfile.TemporaryDirectory(prefix="bench-lora-") as tmp:
        configs, storage = setup(Path(tmp), shape, rank)
        trainers = {mode: PersistentTrainer(c) for mode, c in configs.items()}
        policy = dict.fromkeys(configs, storage.join("init"))
        rows: dict[str, list[dict]] = {mode: [] for mode in configs}
        try:
            for version in range(1, steps + 1):
                for mode, config in configs.items():  # alternating: same machine load
                    out = storage.join(mode, f"step{version}")
                    manifest = train_and_commit(
                        config, advantaged_uri=storage.join("adv"), policy_uri=policy[mode],
                        out_uri=out, policy_version=version, trainer=trainers[mode],
                    )  # fmt: skip
                    local = materialize(storage, out)
                    rows[mode].append({
                        "tokens_per_s": manifest.stats["tokens_per_s"],
                        "trainable": manifest.stats["parameters"]["trainable"],
                        "total": manifest.stats["parameters"]["total"],
                        **{f"{part}_bytes": folder_bytes(local / part)
                           for part in ("hf", "adapter", "optim")},
                    })  # fmt: skip
                    print(f"{mode} step {version}: {rows[mode][-1]}", flush=True)
                    policy[mode] = out
        finally:
            for trainer in trainers.values():
                trainer.close()
    return rows


def summary(rows: dict[str, list[dict]]) -> dict[str, float]:
    steady = {m: [r["tokens_per_s"] for r in rs[1:] or rs] for m, rs in rows.items()}
    last = {m: rs[-1] for m, rs in rows.items()}
    ckpt = {m: r["hf_bytes"] + r["adapter_bytes"] + r["optim_bytes"] for m, r in last.items()}
    return {
        "full_tokens_per_s": statistics.mean(steady["full"]),
        "full_tokens_per_s_sd": statistics.pstdev(steady["full"]),
        "lora_tokens_per_s": statistics.mean(steady["lora"]),
        "lora_tokens_per_s_sd": statistics.pstdev(steady["lora"]),
        "tokens_per_s_ratio": statistics.mean(steady["lora"]) / statistics.mean(steady["full"]),
        "full_trainable": last["full"]["trainable"],
        "lora_trainable": last["lora"]["trainable"],
        "full_checkpoint_bytes": ckpt["full"],
        "lora_checkpoint_bytes": ckpt["lora"],
        "full_optim_bytes": last["full"]["optim_bytes"],
        "lora_optim_bytes": last["lora"]["optim_bytes"],
        "checkpoint_bytes_ratio": ckpt["lora"] / ckpt["full"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    computed = {
        "tiny": counts(TINY, args.rank),
        **{f"qwen2.5-7b r={r}": counts(QWEN25_7B, r) for r in (8, 32, 64)},
    }
    for name, c in computed.items():
        print(f"computed {name}: " + ", ".join(f"{k}={v:.4g}" for k, v in c.items()))
    measured = {}
    for name, shape in (("tiny", TINY), ("small", SMALL)):
        measured[name] = summary(measure(shape, args.rank, args.steps))
        print(f"measured {name}: " + ", ".join(f"{k}={v:.4g}" for k, v in measured[name].items()))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"computed": computed, "measured": measured}, indent=1)
        )
    ratios = [measured[n]["tokens_per_s_ratio"] for n in measured]
    sizes = [measured[n]["checkpoint_bytes_ratio"] for n in measured]
    print(
        "lora_vs_full_tokens_per_s=" + " ".join(f"{r:.2f}" for r in ratios)
        + " lora_vs_full_checkpoint_bytes=" + " ".join(f"{r:.3f}" for r in sizes)
    )  # fmt: skip


if __name__ == "__main__":
    main()
