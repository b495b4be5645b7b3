"""The persistent trainer: ZeRO-3 ranks started once per flow run, one job per train step.

`pipeline.trainer="persistent"` (the default of a flow run). The flow holds one
`PersistentTrainer`; each train step hands it a `TrainJob` (`launcher.train_and_commit`
writes the job, commits the output folder and its manifest exactly as with the
per-step subprocess) and the ranks (`a2tgpo.training.serve`) answer from memory: no
process start, no gloo/NCCL set-up, no checkpoint read. What a step commits is what the
subprocess path commits, so a crashed run resumes from storage as before.

The trainer restarts its workers (which then build the engine from the committed
checkpoint, as a fresh subprocess would) whenever they do not hold the step's input
policy: on the first step, after a failed or timed-out step, after a worker died, and
when a rerun repeats a step whose output never committed. The workers live in their own
process group, die with this process (PR_SET_PDEATHSIG), and are killed with their
group on `close()` or any failure; their control folder is swept like a train step's.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from a2tgpo.config import RunConfig
from a2tgpo.supervise import process_identity, session_temp_dir
from a2tgpo.training import launcher
from a2tgpo.training.serve import (
    STOP_FILE,
    done_file,
    job_file,
    started_file,
    write_atomically,
)
from a2tgpo.training.worker import TrainJob

log = logging.getLogger(__name__)
SERVICE_PREFIX = "train-service-"
WAIT_S = 0.05
STOP_GRACE_S = 30.0


class TrainerFailed(RuntimeError):
    """A persistent train step failed; the workers were killed (the next step restarts them)."""


class WorkersGone(TrainerFailed):
    """The workers died before any of them took the job (killed while idle)."""


class PersistentTrainer:
    def __init__(self, config: RunConfig, stream: bool = False):
        self.config = config
        self.stream = stream
        self.procs: list[subprocess.Popen] = []
        self.copiers: list[threading.Thread] = []
        self.control: Path | None = None
        self.log_path: Path | None = None
        self.seq = 0
        self.holding: str | None = None  # the committed policy URI the workers hold
        self.starts = 0  # worker starts so far (1 in a run without failures)
        self.lock = threading.Lock()  # one step at a time
        self.closed = False

    # -- the launcher's interface ------------------------------------------------------

    def run(self, job: TrainJob) -> dict:
        """Run one step on the workers; the stats the worker wrote (as `launcher.launch`)."""
        with self.lock:
            if not (self.alive() and job.mode == "rl" and self.holding == job.policy_uri):
                self.restart()
            try:
                self.send(job)
            except WorkersGone:  # died while idle: nothing of the step ran; once more
                log.warning("persistent trainer: workers gone before the step; restarting")
                self.restart()
                self.send(job)
            self.holding = job.out_uri
        return json.loads((Path(job.out_dir) / "stats.json").read_text())

    def close(self) -> None:
        """Idle: ask the workers to exit, kill what remains after a grace period. During a
        step (an interrupted flow): kill them now; the step fails, uncommitted. Then remove
        the control folder; the trainer starts no workers after this."""
        self.closed = True
        if not self.lock.acquire(timeout=0):
            self.kill()
            return
        try:
            if self.control is not None and self.alive():
                (self.control / STOP_FILE).write_text("")
                deadline = time.monotonic() + STOP_GRACE_S
                while self.alive() and time.monotonic() < deadline:
                    time.sleep(WAIT_S)
            self.kill()
            if self.control is not None:
                shutil.rmtree(self.control, ignore_errors=True)
                self.control = None
        finally:
            self.lock.release()

    def __enter__(self) -> PersistentTrainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- workers -------------------------------------------------------------------------

    def send(self, job: TrainJob) -> None:
        self.seq += 1
        write_atomically(job_file(self.control, self.seq), job.model_dump_json())
        try:
            self.wait(self.seq)
        except BaseException:
            self.kill()  # a failed rank leaves the others waiting in a collective
            raise

    def alive(self) -> bool:
        return bool(self.procs) and all(p.poll() is None for p in self.procs)

    def restart(self) -> None:
        """Kill any workers, then start fresh ones on a new control folder."""
        if self.closed:
            raise TrainerFailed("the persistent trainer was closed (the flow is ending)")
        self.kill()
        if self.control is not None:
            shutil.rmtree(self.control, ignore_errors=True)
        temp_root = session_temp_dir() or tempfile.gettempdir()
        launcher.remove_stale_work_dirs(temp_root)
        self.control = Path(tempfile.mkdtemp(prefix=SERVICE_PREFIX, dir=temp_root))
        (self.control / launcher.OWNER_FILE).write_text(process_identity())
        self.log_path = self.control / "workers.log"
        self.seq, self.holding = 0, None
        commands = launcher.worker_commands(self.config, None, serve=self.control)
        self.procs, self.copiers = launcher.start_workers(commands, self.log_path, self.stream)
        self.starts += 1
        log.info("persistent trainer: started %d worker process(es)", len(self.procs))

    def kill(self) -> None:
        procs, copiers = self.procs, self.copiers
        self.procs, self.copiers, self.holding = [], [], None
        launcher.kill_workers(procs)
        for thread in copiers:
            thread.join()

    def wait(self, seq: int) -> None:
        """Until every rank has answered job `seq`; TrainerFailed on an error answer, a dead
        worker or `pipeline.step_timeout_s`."""
        ranks = range(launcher.world_size(self.config))
        deadline = time.monotonic() + self.config.pipeline.step_timeout_s
        while True:
            answers = [_answer(done_file(self.control, seq, r)) for r in ranks]
            errors = [a["error"] for a in answers if a is not None and not a["ok"]]
            if errors:
                raise TrainerFailed(f"train step failed in a worker:\n{errors[0]}")
            if all(a is not None for a in answers):
                return
            if not self.alive():
                codes = [p.poll() for p in self.procs]
                taken = any(started_file(self.control, seq, r).exists() for r in ranks)
                failure = TrainerFailed if taken else WorkersGone
                raise failure(f"a trainer worker died (exit codes {codes}){self.tail()}")
            if time.monotonic() > deadline:
                limit = self.config.pipeline.step_timeout_s
                raise TrainerFailed(f"train step ran past pipeline.step_timeout_s={limit}")
            time.sleep(WAIT_S)

    def tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "; log tail:\n" + self.log_path.read_text(errors="replace")[-12000:]

    def worker_pids(self) -> list[int]:
        """The workers' process ids (the benchmark samples their memory)."""
        return [p.pid for p in self.procs if p.poll() is None]


def _answer(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def trainer_for(config: RunConfig) -> PersistentTrainer | None:
    """The flow's trainer: a PersistentTrainer, or None for a subprocess per step."""
    return PersistentTrainer(config) if config.pipeline.trainer == "persistent" else None
