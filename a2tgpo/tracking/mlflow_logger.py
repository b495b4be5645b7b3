"""One MLflow run per flow run: params, per-iteration metrics, figures, references.

The tracking URI defaults to a sqlite file beside the local storage root, or under
$A2TGPO_CACHE/mlflow for an s3:// root (MLflow 3 refuses a plain `file:` store); any
server works by URI. The run is tagged with the Prefect flow-run id and the preset;
checkpoints are referenced by URI in tags, never uploaded. Only the config tree is
logged as params, and it holds no credentials (storage credentials come from the
environment).

A run whose process died (SIGKILL, a lost node) stays RUNNING in MLflow; the next run
of the same `run_id` marks it KILLED with the tag `a2tgpo.crashed=true`
(`mark_crashed_runs`), unless its process (the `a2tgpo.process` tag) is still alive.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from a2tgpo.config import RunConfig
from a2tgpo.config_ops import flatten
from a2tgpo.supervise import identity_alive, process_identity

PARAM_BATCH = 100  # MLflow accepts at most 100 params per batch call
PROCESS_TAG = "a2tgpo.process"
CRASHED_TAG = "a2tgpo.crashed"


def tracking_uri(config: RunConfig) -> str:
    if config.tracking.mlflow_uri:
        return config.tracking.mlflow_uri
    base = _local_base(config)
    base.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(base / 'mlflow.db').resolve()}"


def _local_base(config: RunConfig) -> Path:
    """Where a local MLflow store lives: beside a local storage root; for an s3:// root a
    per-user folder ($A2TGPO_CACHE/mlflow), never the working directory."""
    root = config.storage.root
    if root.startswith("s3://"):
        from a2tgpo.data.directories import local_cache_dir

        return local_cache_dir("mlflow")
    return Path(root.removeprefix("file://"))


def experiment_name(config: RunConfig) -> str:
    return config.tracking.experiment or f"a2tgpo-estimators-{config.env.kind}"


def artifact_root(config: RunConfig) -> str | None:
    """A local MLflow store keeps its artifacts beside it (MLflow's default, ./mlruns,
    would land in the working directory); a server decides its own."""
    if config.tracking.mlflow_uri:
        return None
    return (_local_base(config) / "mlflow-artifacts").resolve().as_uri()


class RunTracker:
    """An MLflow run written through the client API (safe from Prefect's task threads)."""

    def __init__(self, config: RunConfig, *, flow_run_id: str | None = None, run_name: str = ""):
        self._open_experiment(config)
        tags = {
            "a2tgpo.run_id": config.run_id,
            "a2tgpo.preset": config.preset,
            "a2tgpo.estimator": config.estimator.name,
            PROCESS_TAG: process_identity(),  # how a rerun tells this run dead or alive
        }
        if flow_run_id:
            tags["prefect.flow_run_id"] = flow_run_id
        if config.tracking.parent_run_id:  # the MLflow UI nests the run under its sweep
            tags["mlflow.parentRunId"] = config.tracking.parent_run_id
        if config.tracking.sweep_id:
            tags["a2tgpo.sweep_id"] = config.tracking.sweep_id
            tags["a2tgpo.role"] = "member"
        run = self.client.create_run(
            self.experiment_id, run_name=run_name or f"{config.preset}-{config.run_id}", tags=tags
        )
        self.run_id = run.info.run_id
        self.log_params(run_params(config))

    def _open_experiment(self, config: RunConfig) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri(config)
        self.client = MlflowClient(self.uri)
        name = experiment_name(config)
        experiment = self.client.get_experiment_by_name(name)
        self.experiment_id = (
            experiment.experiment_id
            if experiment
            else self.client.create_experiment(name, artifact_location=artifact_root(config))
        )

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), PARAM_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + PARAM_BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def set_tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)

    def log_figure(self, figure: Any, path: str) -> None:
        self.client.log_figure(self.run_id, figure, path)

    def log_dict(self, data: dict, path: str) -> None:
        self.client.log_dict(self.run_id, data, path)

    def finish(self, status: str = "FINISHED", error: BaseException | None = None) -> None:
        """End the run; a failure's first line is kept as the tag `a2tgpo.error`."""
        if error is not None:
            first = (str(error).strip().splitlines() or [""])[0][:500]
            self.set_tag("a2tgpo.error", f"{type(error).__name__}: {first}")
        self.client.set_terminated(self.run_id, status=status)

    def url(self) -> str:
        """Where to look: the UI address for a server, the `mlflow ui` command for sqlite."""
        if self.uri.startswith("http"):
            return f"{self.uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"
        return f"mlflow ui --backend-store-uri {self.uri}  (experiment {self.experiment_id}, run {self.run_id})"


def mark_crashed_runs(config: RunConfig) -> list[dict[str, str]]:
    """Mark the RUNNING MLflow runs of `config.run_id` whose process is gone KILLED, tagged
    `a2tgpo.crashed=true`; returns their tags (the flow-run id among them)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri(config))
    experiment = client.get_experiment_by_name(experiment_name(config))
    if experiment is None:
        return []
    # the run id is compared here, not quoted into the filter
    running = client.search_runs(
        [experiment.experiment_id], "attributes.status = 'RUNNING'", max_results=5000
    )
    crashed = []
    for run in running:
        if run.data.tags.get("a2tgpo.run_id") != config.run_id:
            continue
        if identity_alive(run.data.tags.get(PROCESS_TAG, "")):
            continue  # a live run of the same id (another process on this host)
        client.set_tag(run.info.run_id, CRASHED_TAG, "true")
        client.set_terminated(run.info.run_id, status="KILLED")
        crashed.append(run.data.tags)
    return crashed


def run_params(config: RunConfig) -> dict[str, Any]:
    """The flattened config as params, with the estimator's switches resolved (a `None`
    default shows as the value the estimator actually used, so "show diff only" in the
    MLflow UI tells which A²TGPO components were on)."""
    resolved = {f"estimator.{k}": v for k, v in config.estimator.settings().as_dict().items()}
    return flatten(config) | resolved


class SweepTracker(RunTracker):
    """The parent MLflow run of a sweep (its members' runs are nested under it), in the
    members' experiment; reopened, not duplicated, when the sweep is rerun."""

    def __init__(self, config: RunConfig, sweep_id: str, params: dict[str, Any], run_id: str = ""):
        self._open_experiment(config)
        if run_id:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            return
        tags = {"a2tgpo.sweep_id": sweep_id, "a2tgpo.role": "sweep"}
        run = self.client.create_run(self.experiment_id, run_name=f"sweep-{sweep_id}", tags=tags)
        self.run_id = run.info.run_id
        self.log_params(params)

    def log_text(self, text: str, path: str) -> None:
        self.client.log_text(self.run_id, text, path)


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def disable_mlflow_telemetry() -> None:
    """No network calls home from a sandboxed run."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
