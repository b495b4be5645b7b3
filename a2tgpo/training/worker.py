"""The train-step worker: one process per rank, started by `a2tgpo.training.launcher`.

    python -m a2tgpo.training.worker JOB.json          (one CPU process, gloo)
    torchrun --nproc_per_node N -m a2tgpo.training.worker JOB.json      (GPUs, nccl)

Reads the advantaged dataset, builds the DeepSpeed engine from the input policy
(and its optimizer state, when the previous step left one), recomputes the old
log-probs under the pre-update policy, runs the PPO update, and writes into
`out_dir`: `hf/` (the next policy as an HF folder), `optim/` (the optimizer state for
the next step, safetensors + JSON: `a2tgpo.training.optimizer_state`) and
`stats.json`. The launcher commits that folder. Nothing here unpickles: DeepSpeed's
own checkpoints (torch pickles, loaded with weights_only=False) are never written or read.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field

from a2tgpo.config import RunConfig, TrainConfig
from a2tgpo.data.checkpoints import ADAPTER_DIR, STATE_DIR
from a2tgpo.data.stage import read_stage
from a2tgpo.data.storage import Storage
from a2tgpo.engines.options import trainer_temperature
from a2tgpo.faults import failpoint
from a2tgpo.supervise import set_parent_death_signal
from a2tgpo.training.batching import pack, samples_from_table, shard_for_rank, split_mini_batches
from a2tgpo.training.engine import (
    AdapterPlan,
    build_engine,
    init_distributed,
    load_policy,
    train_dtype,
)
from a2tgpo.training.export import export_hf, write_hf
from a2tgpo.training.lora import count_parameters, export_adapter, iter_merged_parameters
from a2tgpo.training.optimizer_state import load_optimizer_state, save_optimizer_state
from a2tgpo.training.update import frozen_logprobs, idle_pass, run_sft, run_update

log = logging.getLogger("a2tgpo.train")


class TrainJob(BaseModel):
    """What one train step needs; written as JSON by the launcher."""

    config: RunConfig
    advantaged_uri: str = Field(description="Committed advantaged dataset.")
    policy_dir: str = Field(description="Local HF folder of the policy to update.")
    state_dir: str | None = Field(
        None, description="Local optimizer state (safetensors + JSON) of the last step."
    )
    reference_dir: str | None = Field(None, description="Local HF folder of the KL reference.")
    out_dir: str = Field(description="Local folder for hf/, optim/ and stats.json.")
    policy_version: int = Field(description="Version of the policy this step writes.")
    policy_uri: str | None = Field(
        None,
        description="Committed URI of the input policy: a persistent worker that holds it "
        "(the output of its last step) trains on from memory.",
    )
    out_uri: str | None = Field(None, description="Where the launcher commits this step.")
    adapter_dir: str | None = Field(
        None, description="model.lora: local adapter of the input policy (None: new adapters)."
    )
    base_uri: str | None = Field(
        None, description="model.lora: URI of the frozen base policy (`policy_dir` holds it)."
    )
    mode: Literal["rl", "sft"] = Field(
        "rl",
        description="rl: the A²TGPO update on an advantaged dataset. sft: likelihood of "
        "the generated tokens of a trajectories dataset (the warm-start).",
    )


def check_samples(samples, mode: str) -> None:
    if not samples:
        raise ValueError("the input dataset is empty: nothing to train on")
    if mode == "sft":
        return
    for s in samples:
        if not np.isfinite(s.advantage[s.mask]).all():
            raise ValueError(f"non-finite advantage in trajectory row {s.index}")
        if not (np.isfinite(s.eps_low[s.mask]).all() and (s.eps_low[s.mask] > 0).all()):
            raise ValueError(f"non-positive or non-finite clip range in trajectory row {s.index}")


def effective_train_config(job: TrainJob) -> TrainConfig:
    """The SFT warm-start trains with its own learning rate and token budget."""
    if job.mode == "rl":
        return job.config.train
    ws = job.config.warmstart
    return job.config.train.model_copy(
        update={
            "learning_rate": ws.learning_rate,
            "micro_batch_tokens": ws.micro_batch_tokens,
            "ppo_epochs": ws.epochs,
            "kl_coef": 0.0,
            "entropy_coef": 0.0,
        }
    )


def plan_batches(job: TrainJob, train: TrainConfig, rank: int, world: int):
    schema = "advantaged" if job.mode == "rl" else "trajectories"
    table = read_stage(Storage(job.config.storage), job.advantaged_uri, schema)
    samples = samples_from_table(table)
    check_samples(samples, job.mode)
    batches, too_long = pack(samples, train.micro_batch_tokens)
    if too_long:
        log.warning(
            "skipped %d trajectories longer than micro_batch_tokens=%d (longest %d)",
            len(too_long),
            train.micro_batch_tokens,
            max(len(s.tokens) for s in too_long),
        )
    if not batches:
        raise ValueError(
            f"every trajectory is longer than micro_batch_tokens={train.micro_batch_tokens}; raise it"
        )
    if job.mode == "sft":
        return batches, [], {"skipped_too_long": len(too_long), "micro_batches": len(batches)}
    groups = split_mini_batches(batches, train.mini_batches)
    owned = [mb for g in groups for mb in shard_for_rank(g, rank, world)]
    return batches, owned, {"skipped_too_long": len(too_long), "micro_batches": len(batches)}


@torch.no_grad()
def old_logprobs(engine, owned, temperature: float = 1.0) -> dict[int, torch.Tensor]:
    """Log-probs under the pre-update policy for this rank's micro-batches (idle passes keep
    ZeRO-3 ranks in step)."""
    engine.eval()
    out = {}
    for mb in owned:
        if mb is None:
            idle_pass(engine)
        else:
            out.update(frozen_logprobs(engine, [mb], temperature))
    return out


def mismatch_stats(owned, old: dict[int, torch.Tensor]) -> dict[str, float]:
    """Engine vs trainer log-probs of the generated tokens, per turn index (this rank).

    Both are of the same distribution unless `logprob_mismatch_warning` (logged at the
    run's start) says otherwise: then the gap is partly by construction.
    """
    sums: dict[str, list[float]] = {}
    for mb in owned:
        if mb is None:
            continue
        for i, s in enumerate(mb.samples):
            if s.rollout_logprobs is None:
                continue
            diff = old[id(mb)][i, : len(s.tokens)].cpu().numpy() - s.rollout_logprobs
            for k in np.unique(s.turn_ids[s.mask]):
                d = diff[s.turn_ids == k]
                acc = sums.setdefault(str(int(k)), [0.0, 0.0, 0.0])
                acc[0] += float(np.abs(d).sum())
                acc[1] += float(d.sum())
                acc[2] += d.size
    # the turn index last (`a2tgpo.tracking.metrics.turn_key`): one MLflow section per quantity
    return {
        f"mismatch/{name}/turn_{k}": value / max(n, 1)
        for k, (a, b, n) in sums.items()
        for name, value in (("abs_diff", a), ("diff", b))
    }


def mlflow_metrics(summary: dict) -> dict[str, float]:
    """The step's statistics under the names MLflow shows (the tracker logs them as is)."""
    metrics = {
        "loss/first": summary["loss_first"],
        "loss/last": summary["loss_last"],
        "grad_norm": summary["grad_norm_mean"],
        "clip_fraction": summary.get("clip_fraction", 0.0),
        "clip_fraction/low": summary.get("clip_fraction_low", 0.0),
        "clip_fraction/high": summary.get("clip_fraction_high", 0.0),
        "clip_fraction/dual": summary.get("dual_clip_fraction", 0.0),
        "approx_kl": summary.get("approx_kl", 0.0),
        "throughput/train_tokens_per_s": summary["tokens_per_s"],
        "train/skipped_too_long": float(summary.get("skipped_too_long", 0)),
        **summary["mismatch"],
        **summary.get("correction", {}),
    }
    if "parameters" in summary:  # all of them, or the LoRA adapters'
        metrics["train/trainable_params"] = float(summary["parameters"]["trainable"])
    if "kl_ref" in summary:
        metrics["kl/reference"] = summary["kl_ref"]
    for k, fraction in summary.get("clip_fraction_by_turn", {}).items():
        metrics[f"clip_fraction/turn_{k}"] = fraction
    return metrics


@dataclass
class Resident:
    """What a persistent worker keeps between train steps (`a2tgpo.training.serve`)."""

    engine: Any
    policy_uri: str | None  # the committed checkpoint the engine's weights and state equal
    reference: Any | None = None  # the KL reference model, loaded once
    released: bool = False  # states offloaded to CPU memory (pipeline.release_trainer_memory)


def open_engine(job: TrainJob, train: TrainConfig, dtype, resident: Resident | None) -> Resident:
    """The engine of this step: the resident one when it holds the job's input policy, else
    one built from the checkpoint folder (with its optimizer state)."""
    if resident is not None:
        if job.mode != "rl" or job.policy_uri is None or resident.policy_uri != job.policy_uri:
            raise RuntimeError(
                f"this worker holds {resident.policy_uri}, the step needs {job.policy_uri}: "
                "the trainer must restart its workers"
            )
        if resident.released:
            resident.engine.reload_states()
            resident.released = False
        return resident
    engine = build_engine(job.policy_dir, train, dtype, adapter_plan(job))
    if job.state_dir:
        load_optimizer_state(engine, job.state_dir)
    return Resident(engine, job.policy_uri)


def adapter_plan(job: TrainJob) -> AdapterPlan | None:
    """LoRA adapters to train, for an RL step under model.lora (the warm-start trains the
    whole model: it is what the adapters' base is)."""
    lora = job.config.model.lora
    if job.mode != "rl" or not lora.enabled:
        return None
    seed = job.config.seed if lora.init_seed is None else lora.init_seed
    return AdapterPlan(lora, job.adapter_dir, seed)


def reference_logprobs(job, resident: Resident, owned, dtype, temperature):
    """The KL reference's log-probs of this rank's micro-batches (its model kept resident).
    When the reference is the frozen base of the adapters being trained, it is the same
    engine with the adapters switched off: no second copy of the model."""
    if adapter_plan(job) is not None and job.reference_dir == job.policy_dir:
        with resident.engine.module.disable_adapter():
            return frozen_logprobs(
                resident.engine, [mb for mb in owned if mb is not None], temperature
            )
    if resident.reference is None:
        path = job.reference_dir or job.policy_dir
        resident.reference = load_policy(path, dtype).to(resident.engine.device)
    return frozen_logprobs(resident.reference, [mb for mb in owned if mb is not None], temperature)


def run(job: TrainJob, resident: Resident | None = None) -> tuple[dict, Resident]:
    """One train step in this process (the process group is up); returns its summary and
    what a persistent worker keeps for the next step."""
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    failpoint(f"train-worker:{job.policy_version}")  # a rank dies in the middle of a step
    clock = Clock()
    config = job.config
    train = effective_train_config(job)
    dtype = train_dtype(config.model.dtype)
    batches, owned, batch_info = clock.time("read_s", plan_batches, job, train, rank, world)
    resident = clock.time("build_s", open_engine, job, train, dtype, resident)
    engine = resident.engine
    if job.mode == "sft":
        stats, old = run_sft(engine, batches, train.ppo_epochs, rank, world, config.seed), {}
    else:
        temperature = trainer_temperature(config.rollout)
        old = clock.time("old_logprobs_s", old_logprobs, engine, owned, temperature)
        ref = None
        if train.kl_coef > 0:
            ref = reference_logprobs(job, resident, owned, dtype, temperature)
        stats = clock.time(
            "update_s", run_update, engine, batches, old, ref, train, rank, world, temperature
        )
    out = Path(job.out_dir)
    clock.time("export_s", export_step, job, engine, out, dtype, rank)
    summary = {
        **stats.summary(),
        **batch_info,
        "mismatch": mismatch_stats(owned, old),
        "world_size": world,
        "policy_version": job.policy_version,
        "tokens_per_s": stats.tokens / stats.seconds if stats.seconds else 0.0,
        "parameters": count_parameters(engine.module),
        "wall_seconds": clock.elapsed(),
        "timing": clock.spans,
    }
    summary["metrics"] = mlflow_metrics(summary)
    if rank == 0:
        if not all(math.isfinite(x) for x in stats.losses):
            raise FloatingPointError(f"non-finite loss during the update: {stats.losses}")
        (out / "stats.json").write_text(json.dumps(summary, indent=2))
    torch.distributed.barrier()
    resident.policy_uri = job.out_uri
    return summary, resident


def export_step(job: TrainJob, engine, out: Path, dtype, rank: int) -> None:
    if adapter_plan(job) is None:
        export_hf(engine.module, job.policy_dir, out / "hf", dtype=dtype, write=rank == 0)
    else:
        export_adapter(engine.module, out / ADAPTER_DIR, job.base_uri or "", write=rank == 0)
        if job.config.train.export_merged:
            merged = iter_merged_parameters(engine.module, dtype)
            write_hf(merged, job.policy_dir, out / "hf", dtype, write=rank == 0)
    if job.mode == "rl":  # the warm-start's optimizer state (its own lr) must not leak into RL
        save_optimizer_state(engine, out / STATE_DIR, write=rank == 0)


class Clock:
    """Wall seconds of a step's phases (`summary["timing"]`)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.spans: dict[str, float] = {}

    def time(self, name: str, function, *args):
        begin = time.perf_counter()
        try:
            return function(*args)
        finally:
            self.spans[name] = self.spans.get(name, 0.0) + time.perf_counter() - begin

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def main(argv: list[str] | None = None) -> None:
    # The launcher's preexec set this already; torchrun's workers (its children) need
    # their own, so that a killed torchrun does not leave them running.
    set_parent_death_signal(signal.SIGKILL)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = argv if argv is not None else sys.argv[1:]
    job = TrainJob.model_validate_json(Path(args[0]).read_text())
    init_distributed()
    run(job)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
