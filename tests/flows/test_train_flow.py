"""The training flow end to end: Prefect (test harness), storage on moto's S3 server,
MLflow on sqlite, vLLM rollouts and DeepSpeed training on CPU; then a crash and resume."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from transformers import AutoModelForCausalLM

from a2tgpo.data.checkpoints import local_policy
from a2tgpo.data.stage import read_manifest, read_stage
from a2tgpo.layout import RunLayout
from a2tgpo.tracking.figures import FIGURE_PATHS
from a2tgpo.tracking.mlflow_logger import experiment_name
from flows.train import train_flow
from tests.flows.conftest import s3_config

pytestmark = pytest.mark.slow

STAGES = ("prompts", "trajectories", "scored", "advantaged", "checkpoint")


def stage_manifests(layout: RunLayout, iterations: int) -> dict[str, object]:
    out = {}
    for k in range(iterations):
        for stage in (*STAGES, "eval-greedy", "eval-sampled"):
            manifest = read_manifest(layout.storage, layout.stage(k, stage))
            if manifest is not None:
                out[f"{k}/{stage}"] = manifest
    return out


@pytest.fixture(scope="module")
def e2e_run(prefect_harness, s3_endpoint, mlflow_template, tmp_path_factory):
    """The tiny run on S3, trained once: checked end to end below, and the uninterrupted
    run a killed one must equal."""
    folder = tmp_path_factory.mktemp("e2e")
    shutil.copy(mlflow_template, folder / "mlflow.db")
    config = s3_config(s3_endpoint, f"sqlite:///{folder / 'mlflow.db'}", folder)
    config = config.model_copy(update={"run_id": "e2e"})
    return config, train_flow(config=config)


def test_train_flow_end_to_end_on_s3(e2e_run):
    config, result = e2e_run
    layout = RunLayout.of(config)
    manifests = stage_manifests(layout, config.iterations)
    for k in range(config.iterations):
        policy = layout.policy(config, k)
        assert manifests[f"{k}/prompts"].num_rows == 4
        for stage in ("trajectories", "scored", "advantaged"):
            assert manifests[f"{k}/{stage}"].num_rows == 16  # 4 prompts x 4 rollouts
        assert manifests[f"{k}/trajectories"].parents == [layout.stage(k, "prompts"), policy]
        assert manifests[f"{k}/scored"].parents == [layout.stage(k, "trajectories"), policy]
        assert manifests[f"{k}/advantaged"].parents == [layout.stage(k, "scored")]
        assert manifests[f"{k}/checkpoint"].parents == [layout.stage(k, "advantaged"), policy]
        assert manifests[f"{k}/checkpoint"].policy_version == k + 1
        assert manifests[f"{k}/eval-greedy"].num_rows == 4
        assert manifests[f"{k}/eval-sampled"].num_rows == 8
        # the engine's and the trainer's log-probs of the same tokens agree (reloads included)
        mismatch = manifests[f"{k}/checkpoint"].stats["mismatch"]
        assert mismatch and max(v for key, v in mismatch.items() if "abs" in key) < 1e-4
    initial = read_manifest(layout.storage, layout.uri("eval-initial-greedy"))
    assert initial.num_rows == 4 and initial.parents[-1] == layout.initial_policy(config)
    assert result["history"][0]["iteration"] == "start"
    assert [row["iteration"] for row in result["history"][1:]] == list(range(config.iterations))
    assert result["policy"] == layout.stage(config.iterations - 1, "checkpoint")
    assert result["storage"].startswith("s3://")

    client = MlflowClient(config.tracking.mlflow_uri)
    experiment = client.get_experiment_by_name(experiment_name(config))
    (run,) = client.search_runs([experiment.experiment_id], "tags.`a2tgpo.run_id` = 'e2e'")
    assert run.info.status == "FINISHED"
    assert run.data.tags["prefect.flow_run_id"]
    assert run.data.params["estimator.name"] == "a2tgpo"
    for key in (
        "reward",
        "em",
        "f1",
        "ig/mean/turn_0",
        "ig/count/turn_0",
        "adv/abs_mean/turn_0",
        "eps_low/min/turn_0",
        "eps_high/max/turn_0",
        "clip_fraction/turn_0",
        "mismatch/abs_diff/turn_0",
        "time/rollout_s",
        "eval/greedy/em",
    ):
        history = client.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in history) == list(range(config.iterations)), key
    (baseline,) = client.get_metric_history(run.info.run_id, "eval_initial/greedy/em")
    assert baseline.step == 0
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert figures == set(FIGURE_PATHS)
    assert run.data.tags["checkpoint.iter_00001"] == layout.stage(1, "checkpoint")


def run_flow_in_subprocess(config, tmp_path) -> tuple[subprocess.Popen, Path]:
    """The flow in its own process (and process group), on the test harness's Prefect
    server (so the rerun sees its flow run); (the process, its log file)."""
    from prefect.settings import PREFECT_API_URL

    spec = tmp_path / "config.json"
    spec.write_text(config.model_dump_json())
    code = (
        "from a2tgpo.config import RunConfig; from flows.train import train_flow; "
        f"train_flow(config=RunConfig.model_validate_json(open({str(spec)!r}).read()))"
    )
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    log = tmp_path / "killed-flow.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return process, log


def flow_runs_of(run_id: str) -> dict[str, str]:
    """{flow run id: state type} of the flow runs tagged with `run_id`."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas import filters

    from flows.train import RUN_TAG

    tagged = filters.FlowRunFilter(tags=filters.FlowRunFilterTags(all_=[RUN_TAG + run_id]))
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=tagged)
    return {str(run.id): run.state.type.value for run in runs}


def test_killed_after_score_ig_resumes_without_recomputing(e2e_run, tmp_path):
    reference, _ = e2e_run  # the same run, uninterrupted
    crashy = reference.model_copy(update={"run_id": "crashy"})

    layout = RunLayout.of(crashy)
    process, log = run_flow_in_subprocess(crashy, tmp_path)
    deadline = time.monotonic() + 900
    while read_manifest(layout.storage, layout.stage(0, "scored")) is None:
        assert process.poll() is None, f"ended before score-ig committed:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"score-ig never committed:\n{log.read_text()}"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # the flow, its vLLM engine and any workers
    process.wait()
    before = stage_manifests(layout, crashy.iterations)
    assert "0/scored" in before and "1/checkpoint" not in before

    (dead_flow_run,) = flow_runs_of("crashy")  # left RUNNING by the killed process

    train_flow(config=crashy)
    assert_marked_crashed(crashy, dead_flow_run)
    after = stage_manifests(layout, crashy.iterations)
    for key, manifest in before.items():  # committed before the crash: never redone
        assert (
            after[key].created_at == manifest.created_at and after[key].attempt == manifest.attempt
        )
    ref_layout = RunLayout.of(reference)
    for k in range(crashy.iterations):
        for stage in ("trajectories", "scored", "advantaged"):
            ours = read_stage(layout.storage, layout.stage(k, stage))
            theirs = read_stage(ref_layout.storage, ref_layout.stage(k, stage))
            assert ours.equals(theirs), f"iteration {k} {stage} differs from the uninterrupted run"
    last = f"{crashy.iterations - 1}"
    ours = AutoModelForCausalLM.from_pretrained(
        local_policy(layout.storage, layout.stage(int(last), "checkpoint"))
    )
    theirs = AutoModelForCausalLM.from_pretrained(
        local_policy(ref_layout.storage, ref_layout.stage(int(last), "checkpoint"))
    )
    for (name, a), (_, b) in zip(
        ours.state_dict().items(), theirs.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def assert_marked_crashed(config, dead_flow_run: str) -> None:
    """The rerun marked the killed run KILLED in MLflow (tag a2tgpo.crashed) and its flow
    run Crashed in Prefect; the rerun itself finished."""
    client = MlflowClient(config.tracking.mlflow_uri)
    experiment = client.get_experiment_by_name(experiment_name(config))
    runs = client.search_runs(
        [experiment.experiment_id],
        f"tags.`a2tgpo.run_id` = '{config.run_id}'",
        order_by=["attributes.start_time ASC"],
    )
    assert [r.info.status for r in runs] == ["KILLED", "FINISHED"]
    assert runs[0].data.tags["a2tgpo.crashed"] == "true"
    assert runs[0].data.tags["prefect.flow_run_id"] == dead_flow_run
    assert "a2tgpo.crashed" not in runs[1].data.tags
    states = flow_runs_of(config.run_id)
    assert states.pop(dead_flow_run) == "CRASHED"
    assert list(states.values()) == ["COMPLETED"]
