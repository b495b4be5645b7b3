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
import time
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from a2tgpo.config import RunConfig
from a2tgpo.data.checkpoints import PolicyFiles, local_policy, policy_files
from a2tgpo.data.directories import commit_directory
from a2tgpo.data.manifest import Manifest
from a2tgpo.data.stage import read_manifest
from a2tgpo.data.storage import Storage
from a2tgpo.engines.adapters import AdapterError
from a2tgpo.supervise import (
    parent_death_preexec,
    process_identity,
    process_on_this_host_is_gone,
    session_temp_dir,
)
from a2tgpo.training.worker import TrainJob


class StepRunner(Protocol):
    """Runs train steps on workers it keeps (`a2tgpo.training.persistent.PersistentTrainer`)."""

    def run(self, job: TrainJob) -> dict: ...


log = logging.getLogger(__name__)
WORK_PREFIX = "train-step-"
SERVICE_GLOB = "train-service-*"  # the persistent trainer's control folders
OWNER_FILE = "owner"  # the process identity of the step using the folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def world_size(config: RunConfig) -> int:
    return config.train.num_gpus if config.train.num_gpus > 0 else config.train.cpu_processes


def worker_commands(
    config: RunConfig, job_path: Path | None, serve: Path | None = None
) -> list[tuple[list[str], dict[str, str]]]:
    """The processes to start: (argv, extra environment) per process. Each runs the job
    at `job_path`, or with `serve` answers the persistent trainer's jobs in that folder."""
    port = str(free_port())
    module = "a2tgpo.training.serve" if serve is not None else "a2tgpo.training.worker"
    args = [module, str(serve if serve is not None else job_path)]
    if config.train.num_gpus > 0:
        argv = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={config.train.num_gpus}",
            f"--master_port={port}",
            "-m",
            *args,
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
            [sys.executable, "-m", *args],
            {**base, "RANK": str(r), "LOCAL_RANK": str(r)},
        )
        for r in range(world)
    ]


def start_workers(
    commands: list[tuple[list[str], dict[str, str]]], log_path: Path, stream: bool = False
) -> tuple[list[subprocess.Popen], list[threading.Thread]]:
    """Start the worker processes, their output into `log_path` (with `stream`, rank 0's
    also to stderr, through a copier thread); on a failed start none is left running."""
    procs: list[subprocess.Popen] = []
    copiers: list[threading.Thread] = []
    log_path.write_text("")
    try:  # every writer appends: the children's shared descriptor and the copiers' own
        with open(log_path, "a", buffering=1) as log_file:
            for rank, (argv, extra) in enumerate(commands):
                procs.append(_start_worker(argv, extra, log_file, tee=stream and rank == 0))
                if procs[-1].stdout is not None:
                    copiers.append(threading.Thread(target=_tee, args=(procs[-1].stdout, log_path)))
                    copiers[-1].start()
    except BaseException:
        kill_workers(procs)
        raise
    return procs, copiers


def launch(config: RunConfig, job: TrainJob, log_path: Path, stream: bool = False) -> dict:
    """Run the workers to completion; returns the stats the worker wrote.

    Output goes to `log_path`; with `stream`, rank 0's output is also copied to stderr
    (progress bars of a CLI run). Past `pipeline.step_timeout_s` the workers are killed.
    """
    job_path = Path(job.out_dir).parent / "job.json"
    job_path.write_text(job.model_dump_json())
    procs, copiers = start_workers(worker_commands(config, job_path), log_path, stream)
    deadline = time.monotonic() + config.pipeline.step_timeout_s
    try:
        codes = [p.wait(timeout=max(deadline - time.monotonic(), 0.001)) for p in procs]
    except subprocess.TimeoutExpired:
        kill_workers(procs)
        raise RuntimeError(
            f"train step ran past pipeline.step_timeout_s={config.pipeline.step_timeout_s}; "
            f"workers killed; log tail:\n{log_path.read_text()[-12000:]}"
        ) from None
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


def _tee(pipe, log_path: Path) -> None:
    with open(log_path, "a", buffering=1) as log_file:
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
    trainer: StepRunner | None = None,
) -> Manifest:
    """Update the policy in `policy_uri` on `advantaged_uri`; commit it at `out_uri`.

    mode="sft" fits a trajectories dataset by likelihood instead (the warm-start).
    `trainer` runs the step on the persistent trainer's workers instead of new ones.
    """
    start = time.perf_counter()
    storage = Storage(config.storage)
    read_manifest_or_fail(storage, advantaged_uri)
    policy = input_policy(config, storage, policy_uri, mode)
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
            policy_dir=str(policy.model_dir),
            state_dir=str(policy.state_dir) if policy.state_dir else None,
            adapter_dir=str(policy.adapter_dir) if policy.adapter_dir else None,
            base_uri=policy.base_uri,
            reference_dir=reference,
            out_dir=str(out_dir),
            policy_version=policy_version,
            policy_uri=policy_uri,
            out_uri=out_uri,
            mode=mode,
        )
        begin = time.perf_counter()
        if trainer is not None:
            stats = trainer.run(job)
        else:
            stats = launch(config, job, Path(work) / "worker.log", stream=stream)
        add_step_timing(stats, begin - start, time.perf_counter() - begin)
        if job.base_uri:  # a LoRA step: the manifest names the frozen base
            stats["lora"] = {"base_policy": job.base_uri, **config.model.lora.model_dump()}
        return commit_directory(
            storage,
            out_dir,
            out_uri,
            policy_version=policy_version,
            parents=[advantaged_uri, policy_uri, *lineage_base(policy, policy_uri)],
            stats=stats,
        )


def input_policy(config: RunConfig, storage: Storage, uri: str, mode: str) -> PolicyFiles:
    """The step's input policy as local folders. Under model.lora an RL step trains
    adapters on a frozen base: the input policy itself when it is a full model (the
    first step: new adapters), else the base its adapter names."""
    policy = policy_files(storage, uri)
    lora = config.model.lora.enabled and mode == "rl"
    if policy.adapter_dir is not None and not lora:
        raise AdapterError(
            f"{uri} is a LoRA checkpoint (adapter on {policy.base_uri}); a {mode} step on it "
            "needs model.lora set as it was trained"
        )
    if lora and policy.base_uri is None:
        return replace(policy, base_uri=uri, state_dir=None)  # new adapters: no AdamW state
    return policy


def lineage_base(policy: PolicyFiles, policy_uri: str) -> list[str]:
    """The frozen base, named in the lineage of every LoRA checkpoint after the first."""
    return [policy.base_uri] if policy.base_uri and policy.base_uri != policy_uri else []


def add_step_timing(stats: dict, prepare_s: float, workers_s: float) -> None:
    """Split the step's wall time: `startup` is everything the workers did not spend on
    reading data, old log-probs, the update and the export (process start, process group,
    engine build, checkpoint load; for a persistent trainer's held policy, ~0)."""
    timing = stats.setdefault("timing", {})
    compute = sum(timing.get(k, 0.0) for k in ("read_s", "old_logprobs_s", "update_s", "export_s"))
    timing |= {"prepare_s": prepare_s, "workers_s": workers_s}
    timing["startup_s"] = max(workers_s - compute, 0.0)
    metrics = stats.setdefault("metrics", {})
    metrics["time/train_startup_s"] = timing["startup_s"]
    metrics["time/train_compute_s"] = compute
    metrics["time/train_prepare_s"] = prepare_s


def remove_stale_work_dirs(temp_root: str | Path) -> None:
    """Remove the train-step and trainer folders under `temp_root` left by a process of
    this host that was killed (SIGKILL runs no cleanup); folders without an owner file
    are left alone."""
    folders = [*Path(temp_root).glob(f"{WORK_PREFIX}*"), *Path(temp_root).glob(SERVICE_GLOB)]
    for folder in folders:
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
