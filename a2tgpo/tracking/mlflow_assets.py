"""What an MLflow run holds besides params and metrics: its prompt datasets as dataset
inputs, the final policy as a logged model, and the system-metrics monitor.

Written through an explicit `MlflowClient` (the tracker's), never MLflow's fluent API:
that API keeps a process-wide tracking URI and active run, which a sweep's member runs
(subflows in one process) and Prefect's task threads would share.

The final policy is an MLflow logged model in both modes of `tracking.log_model`, so the
run's "Logged models" tab lists it and `mlflow.register_model("models:/<model id>", name)`
registers it:

- upload: the HF folder in MLflow's transformers flavour (task text-generation), loadable
  with `mlflow.transformers.load_model`; the pip requirements are given, not inferred
  (inference loads the model in a subprocess: seconds for nothing);
- reference: an external model (MLflow's `create_external_model` form: an MLmodel file and
  no weights) tagged with the checkpoint's URI, for models of many GBs.
"""

from __future__ import annotations

import tempfile
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

POLICY_URI_TAG = "a2tgpo.policy_uri"
MODEL_ID_TAG = "a2tgpo.policy_model_id"
MODEL_NAME = "policy"
CARD_HEADER = (
    "---\nlibrary_name: transformers\npipeline_tag: text-generation\ntags: [a2tgpo]\n---\n\n"
)
REQUIREMENTS = ("transformers", "torch", "tokenizers", "safetensors", "accelerate")


def dataset_input(table: Any, source: str, name: str, context: str) -> Any:
    """An MLflow `DatasetInput` of an Arrow table stored at `source` (a local path or an
    s3:// URI): its schema, row count and digest, with the usage `context` as its tag."""
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag

    with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are local
        warnings.filterwarnings("ignore", message="The specified dataset source")
        dataset = mlflow.data.from_pandas(table.to_pandas(), source=source, name=name)
    # `_to_mlflow_entity` is how MLflow's own `mlflow.log_input` builds the entity
    tags = [InputTag(key="mlflow.data.context", value=context)]
    return DatasetInput(dataset=dataset._to_mlflow_entity(), tags=tags)


def log_policy_model(
    client: Any,
    experiment_id: str,
    run_id: str,
    *,
    policy_uri: str,
    local_dir: Path | None,
    params: dict[str, str],
    step: int,
    card: str,
) -> Any:
    """Log the final policy as the run's logged model `policy`: uploaded from `local_dir`
    (the HF folder), or, with `local_dir` None, an external model referencing
    `policy_uri`. Returns the `LoggedModel`."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_IS_EXTERNAL

    tags = {POLICY_URI_TAG: policy_uri}
    if local_dir is None:
        tags[MLFLOW_MODEL_IS_EXTERNAL] = "true"
    model = client.create_logged_model(
        experiment_id,
        name=MODEL_NAME,
        source_run_id=run_id,
        tags=tags,
        params=params,
        model_type="transformers" if local_dir is not None else "external",
    )
    try:
        with tempfile.TemporaryDirectory(prefix="a2tgpo-mlflow-model-") as tmp:
            folder = Path(tmp) / "model"
            if local_dir is None:
                _save_external(model, folder)
            else:
                _save_transformers(model, run_id, local_dir, folder, card)
            client.log_model_artifacts(model.model_id, str(folder))
    except BaseException:
        client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=step)])
    return client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)


def _save_external(model: Any, folder: Path) -> None:
    """The MLmodel file of an external model (what lets the registry take it)."""
    from mlflow.models.model import MLMODEL_FILE_NAME
    from mlflow.models.utils import get_external_mlflow_model_spec

    folder.mkdir(parents=True)
    get_external_mlflow_model_spec(model).save(str(folder / MLMODEL_FILE_NAME))


def _save_transformers(model: Any, run_id: str, local_dir: Path, folder: Path, card: str) -> None:
    import mlflow.transformers
    from huggingface_hub import ModelCard
    from mlflow.models import Model

    spec = Model(
        artifact_path=model.artifact_location,
        model_uuid=model.model_id,
        run_id=run_id,
        model_id=model.model_id,
    )
    mlflow.transformers.save_model(
        transformers_model=str(local_dir),
        path=str(folder),
        task="text-generation",
        mlflow_model=spec,
        model_card=ModelCard(CARD_HEADER + card),  # else MLflow asks the hub for one
        pip_requirements=pip_requirements(),
    )


def pip_requirements() -> list[str]:
    """The serving environment's pins: this environment's versions, without a local
    build tag (`torch==2.x+cpu` would refuse a CUDA build)."""
    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return pins


def start_system_metrics(tracking_uri: str, run_id: str, interval_s: float) -> Any:
    """MLflow's system-metrics monitor on the run (`system/...`: CPU, memory, disk,
    network, and GPU where pynvml finds one), sampling every `interval_s` seconds in a
    daemon thread; None when off. Stop it with `.finish()` before the run ends (it also
    stops by itself once the run is no longer RUNNING)."""
    if interval_s <= 0:
        return None
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(
        run_id, sampling_interval=interval_s, samples_before_logging=1, tracking_uri=tracking_uri
    )
    monitor.start()
    return monitor
