"""Nothing a run starts outlives it (issue 13, item 3): DeepSpeed workers die with an
interrupted or killed train step, `a2tgpo train` killed with SIGKILL takes its vLLM
engine, Prefect server and workers down, temporary folders go, and the rerun marks the
dead run's MLflow run KILLED. Subprocess output goes to log files printed on failure."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from a2tgpo.supervise import process_identity
from a2tgpo.training.launcher import remove_stale_work_dirs
from tests.flows.conftest import TINY_RUN

REPO = Path(__file__).resolve().parents[2]
DRIVER = REPO / "tests" / "training" / "launch_driver.py"
SECRET = "do-not-leak-8c1f"


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_for(condition: Callable[[], object], timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout_s} s; log:\n{log.read_text()[-8000:]}")
        time.sleep(0.2)


def kill_leftovers(pids) -> None:
    """A failing test must not leave sleepers behind."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


# ---- the train step's workers ----------------------------------------------------------


def start_driver(model_dir: Path, tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    """launch_driver.py in its own session; (process, its work folder, its log)."""
    work, temp = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    temp.mkdir()
    log = tmp_path / "driver.log"
    env = {**os.environ, "TMPDIR": str(temp), "AWS_SECRET_ACCESS_KEY": SECRET}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(DRIVER), str(model_dir), str(work)],
            cwd=REPO,
            env={**env, "PYTHONPATH": str(REPO)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_for(lambda: (work / "pids").exists() or process.poll() is not None, 180, "no worker", log)
    assert process.poll() is None, log.read_text()
    return process, work, log


def test_an_interrupted_train_step_kills_its_workers_and_removes_its_folder(
    tiny_model_dir, tmp_path
):
    process, work, log = start_driver(tiny_model_dir, tmp_path)
    worker, grandchild = map(int, (work / "pids").read_text().split())
    try:
        os.kill(process.pid, signal.SIGINT)  # KeyboardInterrupt inside launch()
        process.wait(timeout=120)
        wait_for(lambda: gone(worker) and gone(grandchild), 30, "workers still running", log)
    finally:
        kill_leftovers([worker, grandchild])
    assert not list((tmp_path / "tmp").glob("train-step-*")), log.read_text()
    job = (work / "job-copy.json").read_text()
    assert json.loads(job)["policy_version"] == 1 and SECRET not in job


def test_a_killed_train_step_launcher_takes_its_workers_down(tiny_model_dir, tmp_path):
    process, work, log = start_driver(tiny_model_dir, tmp_path)
    worker, grandchild = map(int, (work / "pids").read_text().split())
    try:
        process.kill()  # SIGKILL: no cleanup code runs; the kernel signals the worker
        process.wait(timeout=60)
        wait_for(lambda: gone(worker), 30, "the worker outlived its launcher", log)
    finally:
        kill_leftovers([worker, grandchild])


def test_a_killed_steps_temp_folder_is_removed_by_the_next_step(tiny_model_dir, tmp_path):
    """Without the CLI's guardian (a flow run in a pod, a test), a SIGKILLed train step
    leaves its folder: the next train step on the machine removes it, and only it."""
    process, work, _log = start_driver(tiny_model_dir, tmp_path)
    worker, grandchild = map(int, (work / "pids").read_text().split())
    try:
        process.kill()
        process.wait(timeout=60)
    finally:
        kill_leftovers([worker, grandchild])
    temp = tmp_path / "tmp"
    (stale,) = temp.glob("train-step-*")
    live = temp / "train-step-live"  # a step of a process that still runs
    live.mkdir()
    (live / "owner").write_text(process_identity())
    other = temp / "train-step-other"  # no owner file: not ours to judge
    other.mkdir()

    remove_stale_work_dirs(temp)

    assert not stale.exists() and live.exists() and other.exists()


# ---- a rerun marks the dead run -----------------------------------------------------------


def test_a_rerun_marks_dead_mlflow_runs_of_its_run_id_killed(tmp_path):
    from a2tgpo.config import RunConfig
    from a2tgpo.supervise import process_identity
    from a2tgpo.tracking.mlflow_logger import PROCESS_TAG, RunTracker, mark_crashed_runs

    config = RunConfig(
        run_id="r1",
        storage={"root": str(tmp_path / "runs")},
        tracking={"mlflow_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    )
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    runs = {
        "dead": RunTracker(config),
        "alive": RunTracker(config),  # this process: still running
        "finished": RunTracker(config),
        "other": RunTracker(config.model_copy(update={"run_id": "r2"})),
    }
    runs["dead"].set_tag(PROCESS_TAG, f"{process_identity().rsplit(':', 2)[0]}:{dead.pid}:1")
    runs["other"].set_tag(PROCESS_TAG, "gone-host:1:1")
    runs["finished"].finish("FINISHED")

    marked = mark_crashed_runs(config)

    assert [tags["a2tgpo.process"] for tags in marked] == [
        runs["dead"].client.get_run(runs["dead"].run_id).data.tags[PROCESS_TAG]
    ]
    status = {
        name: tracker.client.get_run(tracker.run_id).info.status for name, tracker in runs.items()
    }
    assert status == {
        "dead": "KILLED",
        "alive": "RUNNING",
        "finished": "FINISHED",
        "other": "RUNNING",
    }
    tags = runs["dead"].client.get_run(runs["dead"].run_id).data.tags
    assert tags["a2tgpo.crashed"] == "true"
    assert mark_crashed_runs(config) == []  # once


# ---- `a2tgpo train` killed with SIGKILL -------------------------------------------------


class Session:
    """The processes started under a top process, remembered as they appear (pid and
    start time, so a reused pid is not mistaken for a survivor)."""

    def __init__(self, top: int):
        self.top = top
        self.seen: dict[int, float] = {}
        self.cmdlines: dict[int, str] = {}

    def poll(self) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.top).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    self.seen.setdefault(child.pid, child.create_time())
                    self.cmdlines[child.pid] = " ".join(child.cmdline())

    def running(self, marker: str) -> bool:
        return any(marker in line for pid, line in self.cmdlines.items() if not gone(pid))

    def survivors(self) -> list[str]:
        alive = []
        for pid, started in self.seen.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                process = psutil.Process(pid)
                if process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{pid} {self.cmdlines.get(pid, '')[:120]}")
        return alive


def start_train(tmp_path: Path, run_id: str) -> tuple[subprocess.Popen, Path]:
    overrides = [
        *TINY_RUN,
        "iterations=1",
        f"storage.root={tmp_path / 'runs'}",
        f"tracking.mlflow_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"run_id={run_id}",
    ]
    args = ["train"] + [item for o in overrides for item in ("--set", o)]
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "TMPDIR": str(tmp_path / "tmp"),
        "VLLM_LOGGING_LEVEL": "WARNING",
    }
    (tmp_path / "tmp").mkdir()
    log = tmp_path / "train.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", "from a2tgpo.cli import main; main()", *args],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return process, log


@pytest.mark.slow
def test_a_killed_train_command_leaves_no_process_and_no_temp_folder(tmp_path):
    """SIGKILL of `a2tgpo train` while vLLM holds the policy and DeepSpeed trains it (the
    iteration's train step): every process of the run ends, its temporary folders go,
    and the command, told by its guardian, records the failure in MLflow."""
    top, log = start_train(tmp_path, "killed")
    session = Session(top.pid)
    try:

        def engine_and_workers_up() -> bool:
            assert top.poll() is None, f"train ended first:\n{log.read_text()[-8000:]}"
            session.poll()
            # the flow's persistent trainer runs its ranks as a2tgpo.training.serve
            return session.running("EngineCore") and session.running("a2tgpo.training.serve")

        wait_for(engine_and_workers_up, 1200, "no train step beside a running vLLM", log)
        assert list((tmp_path / "tmp").glob("a2tgpo-session-*/train-service-*"))
        top.kill()
        top.wait(timeout=60)
        deadline = time.monotonic() + 120
        while session.survivors() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not session.survivors(), (
            f"outlived the run: {session.survivors()}\n{log.read_text()[-4000:]}"
        )
    finally:
        kill_leftovers(int(line.split()[0]) for line in session.survivors())
    left = [
        *(tmp_path / "tmp").rglob("a2tgpo-session-*"),
        *(tmp_path / "tmp").rglob("train-step-*"),
        *(tmp_path / "tmp").rglob("train-service-*"),
    ]
    assert not left, left
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        "tags.`a2tgpo.run_id` = 'killed'",
    )
    assert run.info.status == "FAILED", (run.info.status, log.read_text()[-4000:])


@pytest.mark.slow
def test_ctrl_c_twice_ends_a_train_command_and_everything_it_started(tmp_path):
    """The first SIGINT goes to every process of the run (as a terminal's Ctrl-C); the
    second ends the session even if the command ignored the first; exit status 130."""
    top, log = start_train(tmp_path, "interrupted")
    session = Session(top.pid)
    try:

        def flow_running() -> bool:
            assert top.poll() is None, f"train ended first:\n{log.read_text()[-8000:]}"
            session.poll()
            return session.running("uvicorn") and "Beginning flow run" in log.read_text()

        wait_for(flow_running, 600, "no flow run", log)
        top.send_signal(signal.SIGINT)
        time.sleep(1)
        top.send_signal(signal.SIGINT)
        assert top.wait(timeout=120) in (130, -signal.SIGINT), log.read_text()[-4000:]
        wait_for(lambda: not session.survivors(), 60, "processes outlived the run", log)
    finally:
        kill_leftovers(int(line.split()[0]) for line in session.survivors())
    assert not list((tmp_path / "tmp").glob("a2tgpo-session-*"))
