"""Kill the training flow at each stage boundary and in the middle of each stage, rerun
it, and compare every final dataset row for row, and the final weights, with one
uninterrupted run.

One chain of processes: each run dies at the next failpoint (`a2tgpo/faults.py`:
SIGKILL of the flow's process, then of its process group, as when a pod is lost) and
the next run resumes from what is committed. The HF engine keeps each restart cheap;
the commit protocol under test is the same for every engine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from a2tgpo.config import RunConfig
from a2tgpo.data.checkpoints import local_policy
from a2tgpo.data.stage import read_manifest, read_stage
from a2tgpo.faults import ENV
from a2tgpo.layout import RunLayout
from a2tgpo.presets import resolve_config
from tests.flows.conftest import TINY_RUN

pytestmark = pytest.mark.slow

# Boundaries (stage-start) and middles (before-commit: every file written, no manifest).
FAILPOINTS = [
    "stage-start:warmstart:-",
    "before-commit:iter=00000/trajectories",
    # score-ig's boundary and middle are the same commit path as the stages beside it
    # (and tests/flows/test_train_flow.py kills a run after score-ig on S3)
    "before-commit:iter=00000/advantaged",
    "stage-start:train-step:0",
    "before-commit:iter=00000/checkpoint",
    "before-commit:iter=00000/eval-greedy",
    "stage-start:rollout:1",
]
DATASETS = ("prompts", "trajectories", "scored", "advantaged", "eval-greedy", "eval-sampled")
RUN_TIMEOUT_S = 900


# pipeline.overlap: the flow dies while train step 0 runs beside iteration 1's rollout
# (in the middle of the rollout, and at train step 0's commit), and at train step 1
OVERLAP_FAILPOINTS = [
    "before-commit:iter=00001/trajectories",
    "before-commit:iter=00000/checkpoint",
    "stage-start:train-step:1",
]


def tiny_local_config(root: Path, mlflow_uri: str, run_id: str, *extra: str) -> RunConfig:
    return resolve_config(
        "embedded",
        [
            *TINY_RUN,
            "rollout.engine=hf",
            f"storage.root={root}",
            f"tracking.mlflow_uri={mlflow_uri}",
            f"run_id={run_id}",
            *extra,
        ],
    )


def run_flow(config: RunConfig, failpoint: str | None, folder: Path) -> str:
    """The flow in a subprocess that dies at `failpoint` (None: runs to the end); its log."""
    from prefect.settings import PREFECT_API_URL

    name = failpoint or f"{config.run_id}-complete"
    spec = folder / f"{name.replace(':', '_').replace('/', '_')}.json"
    spec.write_text(config.model_dump_json())
    log_path = spec.with_suffix(".log")
    code = (
        "from a2tgpo.config import RunConfig; from flows.train import train_flow; "
        f"train_flow(config=RunConfig.model_validate_json(open({str(spec)!r}).read()))"
    )
    # the test harness's Prefect server: no ephemeral server start per process
    env = {**os.environ, ENV: failpoint or "", "PREFECT_API_URL": PREFECT_API_URL.value()}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            code = process.wait(timeout=RUN_TIMEOUT_S)
        finally:
            _kill_group(process.pid)  # what the dead process left behind (engines, workers)
    text = log_path.read_text(errors="replace")
    if failpoint is None:
        assert code == 0, f"run failed (exit {code}):\n{text[-6000:]}"
        return text
    assert code == -signal.SIGKILL, f"run did not die at {failpoint} (exit {code}):\n{text[-6000:]}"
    assert f"failpoint {failpoint}" in text, text[-6000:]
    return text


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def test_killed_at_every_boundary_and_middle_resumes_to_the_same_run(
    prefect_harness, mlflow_uri, tmp_path
):
    # run ids of this test alone: the session's Prefect server holds other tests' runs
    reference = tiny_local_config(tmp_path / "store", mlflow_uri, "chain-reference")
    crashy = tiny_local_config(tmp_path / "store", mlflow_uri, "chain")
    # the reference runs in a fresh process too: a process the test suite has used may
    # compute with other thread settings, and the comparison is bit for bit
    run_flow(reference, None, tmp_path)

    for failpoint in FAILPOINTS:
        run_flow(crashy, failpoint, tmp_path)
    run_flow(crashy, None, tmp_path)  # the last run: no failpoint, completes
    assert_same_run(crashy, reference)


def test_overlap_killed_mid_overlap_resumes_to_the_same_run(prefect_harness, mlflow_uri, tmp_path):
    overlap = ("pipeline.overlap=true", "train.rollout_correction=mis")
    reference = tiny_local_config(tmp_path / "store", mlflow_uri, "overlap-reference", *overlap)
    crashy = tiny_local_config(tmp_path / "store", mlflow_uri, "overlap-chain", *overlap)
    run_flow(reference, None, tmp_path)
    for failpoint in OVERLAP_FAILPOINTS:
        run_flow(crashy, failpoint, tmp_path)
    run_flow(crashy, None, tmp_path)
    assert_same_run(crashy, reference)
    # iteration 1 rolled out and was scored with policy 0, one version behind the trained one
    layout = RunLayout.of(crashy)
    rows = read_stage(layout.storage, layout.stage(1, "trajectories"))
    assert set(rows["policy_version"].to_pylist()) == {0}
    assert set(rows["staleness"].to_pylist()) == {1}
    scored = read_manifest(layout.storage, layout.stage(1, "scored"))
    assert layout.initial_policy(crashy) in scored.parents
    metrics = read_manifest(layout.storage, layout.stage(1, "checkpoint")).stats["metrics"]
    assert 0 <= metrics["correction/capped_fraction"] <= 1


def assert_same_run(crashy: RunConfig, reference: RunConfig) -> None:
    """Every dataset of every iteration equal row for row, only the manifest's files in
    each folder, and the final weights equal bit for bit."""
    layout = RunLayout.of(crashy)
    ref = RunLayout.of(reference)
    for k in range(crashy.iterations):
        for stage in DATASETS:
            ours = read_stage(layout.storage, layout.stage(k, stage))
            theirs = read_stage(ref.storage, ref.stage(k, stage))
            assert ours.equals(theirs), f"iteration {k} {stage} differs from the uninterrupted run"
            manifest = read_manifest(layout.storage, layout.stage(k, stage))
            assert manifest.num_rows == ours.num_rows
            leftovers = set(layout.storage.list(layout.stage(k, stage)))
            assert leftovers == {"manifest.json", *(f.path for f in manifest.files)}
    last = crashy.iterations - 1
    ours = AutoModelForCausalLM.from_pretrained(
        local_policy(layout.storage, layout.stage(last, "checkpoint"))
    )
    theirs = AutoModelForCausalLM.from_pretrained(
        local_policy(ref.storage, ref.stage(last, "checkpoint"))
    )
    for (name, a), (_, b) in zip(
        ours.state_dict().items(), theirs.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
