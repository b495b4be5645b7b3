"""Launch the DeepSpeed workers in subprocesses, then commit (the train-step and
warm-start stages, `a2tgpo.stages`, both train through `train_and_commit`).

Runs the worker (`a2tgpo.training.worker`) as child processes so that a Prefect task
or a Kubernetes pod can run it and all accelerator memory is freed when it ends:

- `train.num_gpus == 0`: `train.cpu_processes` CPU processes on gloo (DS_ACCELERATOR=cpu);
- `train.num_gpus > 0`: `torchrun --nproc_per_node num_gpus` (nccl, bf16).

The input policy is a committed checkpoint folder (`hf/` and, after the first step,
`ds/` with the optimizer state); the output folder is committed through the storage
layer, manifest last, with the worker's statistics. Worker output goes to the log,
and a failure raises with its tail.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from a2tgpo.config import RunConfig
from a2tgpo.data.checkpoints import checkpoint_parts, local_checkpoint, local_policy
from a2tgpo.data.directories import commit_directory
from a2tgpo.data.manifest import Manifest
from a2tgpo.data.stage import read_manifest
from a2tgpo.data.storage import Storage
from a2tgpo.training.worker import TrainJob

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_commands(config: RunConfig, job_path: Path) -> list[tuple[list[str], dict[str, str]]]:
    """The processes to start: (argv, extra environment) per process."""
    port = str(free_port())
    if config.train.num_gpus > 0:
        argv = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={config.train.num_gpus}",
            f"--master_port={port}",
            "-m",
            "a2tgpo.training.worker",
            str(job_path),
        ]
        return [(argv, {})]
    world = config.train.cpu_processes
    base = {
        "DS_ACCELERATOR": "cpu",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": port,
        "WORLD_SIZE": str(world),
        "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // world)),
    }
    return [
        (
            [sys.executable, "-m", "a2tgpo.training.worker", str(job_path)],
            {**base, "RANK": str(r), "LOCAL_RANK": str(r)},
        )
        for r in range(world)
    ]


def launch(config: RunConfig, job: TrainJob, log_path: Path, stream: bool = False) -> dict:
    """Run the workers to completion; returns the stats the worker wrote.

    Output goes to `log_path`; with `stream`, rank 0's output is also copied to stderr
    (progress bars of a CLI run).
    """
    job_path = Path(job.out_dir).parent / "job.json"
    job_path.write_text(job.model_dump_json())
    procs, copiers = [], []
    with open(log_path, "w", buffering=1) as log_file:
        for rank, (argv, extra) in enumerate(worker_commands(config, job_path)):
            env = {**os.environ, **extra}
            tee = stream and rank == 0
            proc = subprocess.Popen(
                argv, env=env, stderr=subprocess.STDOUT, stdout=subprocess.PIPE if tee else log_file
            )
            if tee:
                copiers.append(threading.Thread(target=_tee, args=(proc.stdout, log_file)))
                copiers[-1].start()
            procs.append(proc)
        codes = [p.wait() for p in procs]
        for thread in copiers:
            thread.join()
    if any(codes):
        tail = log_path.read_text()[-12000:]
        raise RuntimeError(f"train-step workers failed (exit codes {codes}); log tail:\n{tail}")
    return json.loads((Path(job.out_dir) / "stats.json").read_text())


def _tee(pipe, log_file) -> None:
    for line in iter(pipe.readline, b""):
        log_file.write(line.decode(errors="replace"))
        sys.stderr.write(line.decode(errors="replace"))


def train_and_commit(
    config: RunConfig,
    *,
    advantaged_uri: str,
    policy_uri: str,
    out_uri: str,
    policy_version: int,
    reference_uri: str | None = None,
    mode: str = "rl",
    stream: bool = False,
) -> Manifest:
    """Update the policy in `policy_uri` on `advantaged_uri`; commit it at `out_uri`.

    mode="sft" fits a trajectories dataset by likelihood instead (the warm-start).
    """
    storage = Storage(config.storage)
    read_manifest_or_fail(storage, advantaged_uri)
    policy_hf, state = checkpoint_parts(local_checkpoint(storage, policy_uri))
    reference = None
    if reference_uri and config.train.kl_coef > 0:
        reference = str(local_policy(storage, reference_uri))
    with tempfile.TemporaryDirectory(prefix="train-step-") as work:
        out_dir = Path(work) / "checkpoint"
        job = TrainJob(
            config=config,
            advantaged_uri=advantaged_uri,
            policy_dir=str(policy_hf),
            state_dir=str(state) if state else None,
            reference_dir=reference,
            out_dir=str(out_dir),
            policy_version=policy_version,
            mode=mode,
        )
        stats = launch(config, job, Path(work) / "worker.log", stream=stream)
        return commit_directory(
            storage,
            out_dir,
            out_uri,
            policy_version=policy_version,
            parents=[advantaged_uri, policy_uri],
            stats=stats,
        )


def read_manifest_or_fail(storage: Storage, uri: str) -> Manifest:
    manifest = read_manifest(storage, uri)
    if manifest is None:
        raise FileNotFoundError(f"input dataset {uri} is not committed")
    return manifest
