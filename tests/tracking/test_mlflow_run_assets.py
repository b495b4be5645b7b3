"""The MLflow run's identity and assets without a flow: its name and description, the
system-metrics monitor (running, then stopped by `finish`), the final policy referenced
by URI (nothing uploaded) and registered, and artifacts kept beside the sqlite store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from a2tgpo.presets import resolve_config
from a2tgpo.tracking.mlflow_logger import RunTracker, display_name, run_params


def _config(tmp_path: Path, mlflow_uri: str, *overrides: str):
    return resolve_config(
        "a2tgpo",
        [f"storage.root={tmp_path / 'runs'}", f"tracking.mlflow_uri={mlflow_uri}", *overrides],
    )


@pytest.mark.parametrize(
    ("preset", "run_id", "name"),
    [
        ("a2tgpo", "a2tgpo-prefect", "a2tgpo-prefect"),  # was a2tgpo-a2tgpo-prefect
        ("hard-grpo", "estimators-hard-grpo-s0", "estimators-hard-grpo-s0"),
        ("grpo", "default", "grpo · default"),
        ("a2tgpo", "a2tgpoish", "a2tgpo · a2tgpoish"),
    ],
)
def test_display_name_never_repeats_the_preset(preset, run_id, name):
    config = resolve_config(preset, [f"run_id={run_id}"])
    assert display_name(config) == name


@pytest.mark.parametrize("name", ["grpo", "igpo", "a2tgpo", "a2tgpo-no-rescale"])
def test_estimator_switches_are_resolved(name):
    params = run_params(resolve_config(name))
    for switch in ("turn_group_norm", "variance_rescale", "adaptive_clip", "ig_coef"):
        assert params[f"estimator.{switch}"] is not None, (name, switch)
    assert params["estimator.variance_rescale"] is (name == "a2tgpo")


def test_system_metrics_run_until_finish(tmp_path: Path, mlflow_uri: str):
    config = _config(tmp_path, mlflow_uri, "run_id=sysmetrics", "tracking.system_metrics_s=0.2")
    tracker = RunTracker(config)
    assert tracker.monitor is not None
    thread = tracker.monitor._process
    time.sleep(1.0)
    tracker.finish()
    assert tracker.monitor is None and not thread.is_alive()
    run = tracker.client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "a2tgpo · sysmetrics"
    history = tracker.client.get_metric_history(
        run.info.run_id, "system/cpu_utilization_percentage"
    )
    assert history
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    # a sqlite store keeps its artifacts beside it, never in the working directory
    assert experiment.artifact_location == (tmp_path / "mlflow-artifacts").as_uri()


def test_system_metrics_off(tmp_path: Path, mlflow_uri: str):
    tracker = RunTracker(_config(tmp_path, mlflow_uri, "tracking.system_metrics_s=0"))
    assert tracker.monitor is None
    tracker.finish()


def test_a_referenced_policy_is_an_external_model_that_registers(tmp_path: Path, mlflow_uri):
    import mlflow

    config = _config(tmp_path, mlflow_uri, "run_id=ref", "tracking.system_metrics_s=0")
    tracker = RunTracker(config, flow_run_id="f-1", flow_run_url="http://prefect/runs/flow-run/f-1")
    uri = "s3://bucket/runs/ref/iter=00007/checkpoint"
    model = tracker.log_policy(config, uri, None, step=8)
    tracker.finish()
    assert model.tags["a2tgpo.policy_uri"] == uri
    assert model.tags["mlflow.model.isExternal"] == "true"
    files = [f.path for f in tracker.client.list_logged_model_artifacts(model.model_id)]
    assert files == ["MLmodel"]  # nothing of the checkpoint uploaded
    assert model.params["estimator.adaptive_clip"] == "True"
    run = tracker.client.get_run(tracker.run_id)
    assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]
    assert run.data.tags["prefect.flow_run_url"] == "http://prefect/runs/flow-run/f-1"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_uri)
    try:
        version = mlflow.register_model(f"models:/{model.model_id}", "ref-policy")
    finally:
        mlflow.set_tracking_uri(previous)
    assert str(version.version) == "1" and version.source == f"models:/{model.model_id}"
