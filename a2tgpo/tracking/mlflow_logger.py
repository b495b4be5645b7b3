"""One MLflow run per flow run: params, per-iteration metrics, figures, references.

The tracking URI defaults to a sqlite file beside the local storage root, or under
$A2TGPO_CACHE/mlflow for an s3:// root (MLflow 3 refuses a plain `file:` store); any
server works by URI. Only the config tree is logged as params (the estimator's
switches resolved), and it holds no credentials (storage credentials come from the
environment).

What makes a run easy to find: its name `<preset> · <run_id>` (just the run id when it
already names the preset), a description (`mlflow.note.content`: preset, estimator,
model, environment, iterations, where the data lives, the Prefect flow run), the tags
`a2tgpo.preset`, `a2tgpo.estimator`, `prefect.flow_run_id` and `prefect.flow_run_url`
(when the Prefect UI's address is known), MLflow's system metrics, the prompt datasets
as dataset inputs and the final policy as a logged model (`a2tgpo.tracking.mlflow_assets`;
checkpoints of earlier iterations are referenced by URI in tags, never uploaded).

A run whose process died (SIGKILL, a lost node) stays RUNNING in MLflow; the next run
of the same `run_id` marks it KILLED with the tag `a2tgpo.crashed=true`
(`mark_crashed_runs`), unless its process (the `a2tgpo.process` tag) is still alive.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from a2tgpo.config import RunConfig
from a2tgpo.config_ops import flatten
from a2tgpo.supervise import identity_alive, process_identity
from a2tgpo.tracking import mlflow_assets

PARAM_BATCH = 100  # MLflow accepts at most 100 params per batch call
PROCESS_TAG = "a2tgpo.process"
CRASHED_TAG = "a2tgpo.crashed"
NOTE_TAG = "mlflow.note.content"  # the run's description in the MLflow UI
# Which page an experiment opens on: MLflow 3 shows a GenAI overview unless told
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


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
    """A sqlite store keeps its artifacts beside its database file (MLflow's default,
    ./mlruns, would land in the working directory); a server decides its own."""
    uri = tracking_uri(config)
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri.removeprefix("sqlite:///"))  # sqlite:////abs or sqlite:///relative
    return (database.parent / "mlflow-artifacts").resolve().as_uri()


class RunTracker:
    """An MLflow run written through the client API (safe from Prefect's task threads)."""

    monitor: Any = None  # the system-metrics monitor, while it runs

    def __init__(
        self,
        config: RunConfig,
        *,
        flow_run_id: str | None = None,
        flow_run_url: str | None = None,
        storage_uri: str = "",
        run_name: str = "",
    ):
        self._open_experiment(config)
        tags = {
            "a2tgpo.run_id": config.run_id,
            "a2tgpo.preset": config.preset,
            "a2tgpo.estimator": config.estimator.name,
            PROCESS_TAG: process_identity(),  # how a rerun tells this run dead or alive
            NOTE_TAG: run_description(config, storage_uri, flow_run_url),
        }
        if flow_run_id:
            tags["prefect.flow_run_id"] = flow_run_id
        if flow_run_url:
            tags["prefect.flow_run_url"] = flow_run_url
        if config.tracking.parent_run_id:  # the MLflow UI nests the run under its sweep
            tags["mlflow.parentRunId"] = config.tracking.parent_run_id
        if config.tracking.sweep_id:
            tags["a2tgpo.sweep_id"] = config.tracking.sweep_id
            tags["a2tgpo.role"] = "member"
        run = self.client.create_run(
            self.experiment_id, run_name=run_name or display_name(config), tags=tags
        )
        self.run_id = run.info.run_id
        self.log_params(run_params(config))
        self.monitor = mlflow_assets.start_system_metrics(
            self.uri, self.run_id, config.tracking.system_metrics_s
        )

    def _open_experiment(self, config: RunConfig) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri(config)
        self.client = MlflowClient(self.uri)
        name = experiment_name(config)
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            self.experiment_id = experiment.experiment_id
            return
        self.experiment_id = self.client.create_experiment(
            name, artifact_location=artifact_root(config), tags=dict([EXPERIMENT_KIND])
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

    def log_dataset(self, table: Any, source: str, name: str, context: str) -> None:
        """An Arrow table stored at `source` as a dataset input of the run (MLflow's
        Datasets column and the run page's "Datasets used")."""
        dataset = mlflow_assets.dataset_input(table, source, name, context)
        self.client.log_inputs(self.run_id, datasets=[dataset])

    def log_policy(self, config: RunConfig, uri: str, local_dir: Any, step: int) -> Any:
        """The final policy as the run's logged model (`mlflow_assets.log_policy_model`):
        uploaded from `local_dir`, or referenced by `uri` when `local_dir` is None."""
        params = {k: _param_value(v) for k, v in run_params(config).items()}
        model = mlflow_assets.log_policy_model(
            self.client,
            self.experiment_id,
            self.run_id,
            policy_uri=uri,
            local_dir=local_dir,
            params=params,
            step=step,
            card=run_description(config, uri),
        )
        self.set_tag(mlflow_assets.POLICY_URI_TAG, uri)
        self.set_tag(mlflow_assets.MODEL_ID_TAG, model.model_id)
        return model

    def finish(self, status: str = "FINISHED", error: BaseException | None = None) -> None:
        """End the run (system metrics first: their last samples are flushed); a failure's
        first line is kept as the tag `a2tgpo.error`."""
        if self.monitor is not None:
            self.monitor.finish()
            self.monitor = None
        if error is not None:
            first = (str(error).strip().splitlines() or [""])[0][:500]
            self.set_tag("a2tgpo.error", f"{type(error).__name__}: {first}")
        self.client.set_terminated(self.run_id, status=status)

    def url(self) -> str:
        """The run's page: on the tracking server, or on the local `mlflow ui`
        (`ui_command`) for a sqlite store."""
        base = self.uri.rstrip("/") if self.uri.startswith("http") else LOCAL_UI
        return f"{base}/#/experiments/{self.experiment_id}/runs/{self.run_id}"

    def ui_command(self) -> str:
        """How to serve a local store's UI (empty for a tracking server)."""
        if self.uri.startswith("http"):
            return ""
        return f"mlflow ui --backend-store-uri {self.uri}"


def display_name(config: RunConfig) -> str:
    """`<preset> · <run_id>`, or the run id alone when it already names the preset
    (`a2tgpo-prefect` of preset a2tgpo, a sweep member `estimators-hard-grpo-s0`)."""
    if re.search(rf"(^|[-_.]){re.escape(config.preset)}($|[-_.])", config.run_id):
        return config.run_id
    return f"{config.preset} · {config.run_id}"


def run_description(
    config: RunConfig, storage_uri: str = "", flow_run_url: str | None = None
) -> str:
    """The run's description (markdown): what ran, on what, for how long, and where its
    data and its Prefect flow run are."""
    e = config.estimator.settings()
    estimator = config.estimator.name
    if estimator != "grpo":
        switches = (
            f"turn-group norm {_on(e.turn_group_norm)}, sqrt(n) rescale "
            f"{_on(e.variance_rescale)}, adaptive clip {_on(e.adaptive_clip)}, IG coef {e.ig_coef}"
        )
        estimator = f"{estimator} ({switches})"
    m, env, r = config.model, config.env, config.rollout
    model = m.policy or f"the tiny model (hidden {m.tiny_hidden}, {m.tiny_layers} layers)"
    if env.kind == "synthetic":
        world = (
            f"synthetic {env.world} world, {env.num_entities} entities, up to {env.max_hops} hops"
        )
    else:
        world = f"search QA: {env.dataset or '(no training file)'}, retriever {env.retriever}"
    lines = [
        f"**{config.preset}** run `{config.run_id}`: estimator {estimator}.",
        f"- model: {model}",
        f"- environment: {world}",
        f"- {config.iterations} iterations x {r.prompts_per_iteration} prompts x "
        f"{r.group_size} rollouts, up to {r.max_turns} turns ({r.engine})",
    ]
    if storage_uri:
        lines.append(f"- data and checkpoints: `{storage_uri}`")
    if flow_run_url:
        lines.append(f"- Prefect flow run: {flow_run_url}")
    return "\n".join(lines)


def _on(switch: Any) -> str:
    return "on" if switch else "off"


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
