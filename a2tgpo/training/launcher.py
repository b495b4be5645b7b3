"""Launch the DeepSpeed workers in subprocesses, then commit (the train-step and
warm-start stages, `a2tgpo.stages`, both train through `train_and_commit`).

Runs the worker (`a2tgpo.training.worker`) as child processes so that a Prefect task
or a Kubernetes pod can run it and all accelerator memory is freed when it ends:

- `train.num_gpus == 0`: `train.cpu_processes` CPU processes on gloo (DS_ACCELERATOR=cpu);
- `train.num_gpus > 0`: `torchrun --nproc_per_node num_gpus` (nccl, bf16).

The input policy is a committed checkpoint folder (`hf/` and, after the first step,
`optim/` with the optimizer state, safetensors + JSON); the output folder is committed
through the storage layer, manifest last, with the worker's statistics. Worker output
goes to the log, and a failure raises with its tail.

The workers die with the run: each is killed by the kernel when the process that
launched it dies (PR_SET_PDEATHSIG), and with its whole process group when `launch` is
interrupted (KeyboardInterrupt, SIGTERM under `a2tgpo.supervise`, any exception). Their
temporary folder (`train-step-*`: job.json, the new checkpoint before its commit) is
removed on every exit path; under the CLI's guardian it lies in the session's folder,
which the guardian removes even after a SIGKILL; without it, the next train step on the
machine removes the folder of a step whose process is gone (its `owner` file). job.json
holds the run config, which has no credentials (storage credentials come from the
environment).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
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
from a2tgpo.supervise import (
    parent_death_preexec,
    process_identity,
    process_on_this_host_is_gone,
    session_temp_dir,
)
from a2tgpo.training.worker import TrainJob

log = logging.getLogger(__name__)
WORK_PREFIX = "train-step-"
OWNER_FILE = "owner"  # the process identity of the step using the folder


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
    procs: list[subprocess.Popen] = []
    copiers: list[threading.Thread] = []
    with open(log_path, "w", buffering=1) as log_file:
        try:
            for rank, (argv, extra) in enumerate(worker_commands(config, job_path)):
                procs.append(_start_worker(argv, extra, log_file, tee=stream and rank == 0))
                if procs[-1].stdout is not None:
                    copiers.append(threading.Thread(target=_tee, args=(procs[-1].stdout, log_file)))
                    copiers[-1].start()
            codes = [p.wait() for p in procs]
        except BaseException:
            kill_workers(procs)  # never leave a worker running behind an interrupted step
            raise
        finally:
            for thread in copiers:
                thread.join()
    if any(codes):
        tail = log_path.read_text()[-12000:]
        raise RuntimeError(f"train-step workers failed (exit codes {codes}); log tail:\n{tail}")
    return json.loads((Path(job.out_dir) / "stats.json").read_text())


def _start_worker(argv: list[str], extra: dict[str, str], log_file, tee: bool) -> subprocess.Popen:
    """A worker in its own process group (killed as a whole), killed by the kernel if
    this process dies; output to the log, or piped for `_tee`."""
    return subprocess.Popen(
        argv,
        env={**os.environ, **extra},
        stderr=subprocess.STDOUT,
        stdout=subprocess.PIPE if tee else log_file,
        process_group=0,
        preexec_fn=parent_death_preexec(signal.SIGKILL),
    )


def kill_workers(procs: list[subprocess.Popen]) -> None:
    """SIGKILL each worker's process group (torchrun's children included) and reap it.
    Nothing is lost: the step's output is uncommitted and its folder is removed."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    for proc in procs:
        proc.wait()


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
    temp_root = session_temp_dir() or tempfile.gettempdir()
    remove_stale_work_dirs(temp_root)
    with tempfile.TemporaryDirectory(prefix=WORK_PREFIX, dir=temp_root) as work:
        (Path(work) / OWNER_FILE).write_text(process_identity())
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


def remove_stale_work_dirs(temp_root: str | Path) -> None:
    """Remove the train-step folders under `temp_root` left by a process of this host that
    was killed (SIGKILL runs no cleanup); folders without an owner file are left alone."""
    for folder in Path(temp_root).glob(f"{WORK_PREFIX}*"):
        try:
            owner = (folder / OWNER_FILE).read_text()
        except OSError:  # no owner (yet): not ours to judge
            continue
        if process_on_this_host_is_gone(owner):
            log.info("removing %s, left by a killed train step", folder)
            shutil.rmtree(folder, ignore_errors=True)


def read_manifest_or_fail(storage: Storage, uri: str) -> Manifest:
    manifest = read_manifest(storage, uri)
    if manifest is None:
        raise FileNotFoundError(f"input dataset {uri} is not committed")
    return manifest
