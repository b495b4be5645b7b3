"""The persistent trainer (real DeepSpeed ZeRO-3 ranks on CPU, gloo) against the per-step
subprocess: same weights, bit for bit; restart after a failure and after a killed worker;
memory held flat; the ranks leave nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pyarrow as pa
import pytest
import torch

from a2tgpo.data.schemas import ADVANTAGED
from a2tgpo.data.stage import read_stage, write_stage
from a2tgpo.faults import ENV
from a2tgpo.rollout.session import EngineSession
from a2tgpo.training.launcher import free_port
from a2tgpo.training.persistent import PersistentTrainer, TrainerFailed
from tests.training import test_train_step as steps
from tests.training.test_train_step import advantaged, train, weights

setup = steps.setup  # the fixture: a committed tiny model and its storage

pytestmark = pytest.mark.slow


def three_steps(config, storage, init, data, prefix, trainer=None):
    """Steps 1..3 on the same data, each from the last one's committed checkpoint."""
    session = EngineSession(config, keep=False)
    session.trainer = trainer
    policy, manifests = init, []
    for version in (1, 2, 3):
        out = storage.join("run", f"{prefix}{version}")
        manifests.append(train(config, data, policy, out, version=version, session=session))
        policy = out
    return manifests


def test_persistent_steps_equal_subprocess_steps_bit_for_bit(setup):
    config, storage, init, vocab = setup
    data = advantaged(config, vocab, storage.join("run", "adv"))
    fresh = three_steps(config, storage, init, data, "sub")
    with PersistentTrainer(config) as trainer:
        kept = three_steps(config, storage, init, data, "keep", trainer)
        assert trainer.starts == 1  # one start: steps 2 and 3 trained from memory
    for a, b in zip(fresh, kept, strict=True):
        assert a.stats["losses"] == b.stats["losses"]
    wa, wb = (
        weights(storage, storage.join("run", "sub3")),
        weights(storage, storage.join("run", "keep3")),
    )
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # the held steps skip the start-up the subprocess pays on every step
    startup = [m.stats["timing"]["startup_s"] for m in kept]
    assert startup[1] < startup[0] / 3 and startup[2] < startup[0] / 3, startup
    assert kept[1].stats["metrics"]["time/train_startup_s"] == startup[1]


def test_a_step_on_another_policy_restarts_the_workers_from_the_checkpoint(setup):
    config, storage, init, vocab = setup
    data = advantaged(config, vocab, storage.join("run", "adv"))
    session = EngineSession(config, keep=False)
    with PersistentTrainer(config) as trainer:
        session.trainer = trainer
        train(config, data, init, storage.join("run", "a1"), session=session)
        # a rerun of step 1 (its output was never committed, say): not what is held
        train(config, data, init, storage.join("run", "b1"), session=session)
        assert trainer.starts == 2
        wa, wb = (
            weights(storage, storage.join("run", "a1")),
            weights(storage, storage.join("run", "b1")),
        )
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_worker_killed_between_steps_is_restarted_from_the_checkpoint(setup):
    config, storage, init, vocab = setup
    data = advantaged(config, vocab, storage.join("run", "adv"))
    session = EngineSession(config, keep=False)
    with PersistentTrainer(config) as trainer:
        session.trainer = trainer
        first = storage.join("run", "k1")
        train(config, data, init, first, session=session)
        (pid,) = trainer.worker_pids()
        os.kill(pid, signal.SIGKILL)
        manifest = train(config, data, first, storage.join("run", "k2"), version=2, session=session)
        assert manifest.policy_version == 2 and trainer.starts == 2
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_worker_dying_mid_step_fails_it_uncommitted_and_the_rerun_restarts(setup, monkeypatch):
    config, storage, init, vocab = setup
    data = advantaged(config, vocab, storage.join("run", "adv"))
    session = EngineSession(config, keep=False)
    with PersistentTrainer(config) as trainer:
        session.trainer = trainer
        first = storage.join("run", "m1")
        train(config, data, init, first, session=session)
        monkeypatch.setenv(ENV, "train-worker:2")
        trainer.restart()  # only to pass the failpoint to workers (they read their environment)
        with pytest.raises(TrainerFailed, match="died"):
            train(config, data, first, storage.join("run", "m2"), version=2, session=session)
        assert not storage.exists(storage.join("run", "m2", "manifest.json"))
        assert trainer.procs == []  # killed with their group
        monkeypatch.delenv(ENV)
        manifest = train(config, data, first, storage.join("run", "m2"), version=2, session=session)
        # starts: step 1, the restart above, step 2 (a restarted trainer holds nothing, so
        # it builds from the checkpoint in fresh workers), and the rerun after the failure
        assert manifest.policy_version == 2 and trainer.starts == 4


def test_a_failing_step_reports_the_workers_error_and_close_leaves_no_process(setup):
    config, storage, init, vocab = setup
    data = advantaged(config, vocab, storage.join("run", "adv"))
    bad = storage.join("run", "bad")
    table = advantaged(config, vocab, bad)  # then corrupt its clip ranges
    rows = read_stage(storage, table, "advantaged").to_pylist()
    for row in rows:
        for turn in row["turns"]:
            turn["eps_low"] = -1.0
    write_stage(storage, storage.join("run", "bad2"), pa.Table.from_pylist(rows, ADVANTAGED),
                "advantaged", policy_version=0)  # fmt: skip
    session = EngineSession(config, keep=False)
    trainer = PersistentTrainer(config)
    session.trainer = trainer
    with pytest.raises(TrainerFailed, match="clip range"):
        train(config, storage.join("run", "bad2"), init, storage.join("run", "x"), session=session)
    manifest = train(config, data, init, storage.join("run", "y"), session=session)
    assert manifest.policy_version == 1
    pids = trainer.worker_pids()
    control = trainer.control
    session.close()
    assert trainer.procs == [] and not control.exists()
    assert all(not psutil.pid_exists(p) for p in pids)


def test_offloaded_and_reloaded_states_train_on_exactly_as_kept_ones(tiny_model_dir):
    """pipeline.release_trainer_memory's offload (GPU only in a run) and DeepSpeed's reload,
    exercised on CPU: the bookkeeping, not the device traffic, is what a CPU can check."""
    probe = Path(__file__).with_name("offload_probe.py")
    done = subprocess.run(
        [sys.executable, str(probe), str(tiny_model_dir)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "MASTER_PORT": str(free_port())},
    )  # fmt: skip
    assert done.returncode == 0 and "equal=True" in done.stdout, done.stdout + done.stderr[-6000:]
