"""What a run is, as Prefect and MLflow show it: the flow's parameters (a preset choice
list; a partial config and overrides on top of the preset), the flow run's name and
tags, and the MLflow run's name, description, links, params, system metrics, datasets
and logged model. One tiny flow run (HF engine) serves every flow-level check."""

from __future__ import annotations

import json
import math
import re
import shutil
import uuid

import pytest

from a2tgpo.config import RunConfig
from a2tgpo.presets import PRESETS, preset, resolve_config
from tests.flows.conftest import TINY_RUN

# --- parameters, without a flow run ------------------------------------------------------


def test_preset_parameter_is_a_choice_of_every_preset():
    from flows.train import train_flow

    schema = train_flow.parameters.model_dump()["properties"]
    assert schema["preset"]["enum"] == list(PRESETS)
    assert schema["preset"]["default"] == "embedded"
    # a partial tree, not RunConfig's schema (whose defaults would replace the preset's)
    assert "$ref" not in json.dumps(schema["config"])
    assert {"type": "object", "additionalProperties": True} in schema["config"]["anyOf"]


def test_partial_config_and_overrides_land_on_top_of_the_preset():
    base = preset("grpo")
    config = resolve_config(
        "grpo",
        overrides={"rollout": {"group_size": 3}, "iterations": 2, "run_id": "partial"},
        config={"train": {"learning_rate": 0.5}, "eval": {"every": 1}},
    )
    assert (config.rollout.group_size, config.iterations, config.run_id) == (3, 2, "partial")
    assert (config.train.learning_rate, config.eval.every) == (0.5, 1)
    # everything else is the preset's, not RunConfig's defaults
    assert config.preset == "grpo" and config.estimator.name == "grpo"
    assert config.train.ppo_epochs == base.train.ppo_epochs != RunConfig().train.ppo_epochs
    assert config.rollout.prompts_per_iteration == base.rollout.prompts_per_iteration == 96
    assert config.rollout.max_turns == base.rollout.max_turns


def test_dotted_overrides_and_a_whole_run_config():
    dotted = resolve_config("a2tgpo", {"rollout.group_size": 5, "estimator.ig_coef": 0.1})
    assert dotted.rollout.group_size == 5 and dotted.estimator.ig_coef == 0.1
    assert dotted.train.learning_rate == preset("a2tgpo").train.learning_rate
    whole = RunConfig(run_id="whole", iterations=3)  # the CLI's and the sweep's way
    assert resolve_config("grpo", None, whole) is whole
    with pytest.raises(ValueError, match="nope"):
        resolve_config("a2tgpo", config={"rollout": {"nope": 1}})


def test_iteration_description_and_the_answer_turn_note():
    from flows.reporting import NO_IG_NOTE, explain_blank_ig, iteration_description

    metrics = {
        "reward": 0.4512,
        "em": 0.45,
        "turns_per_trajectory": 2.61,
        "clip_fraction": 0.026,
        "time/iteration_s": 21.2,
    }
    seconds = {"prompts": 0.1, "rollout": 6.2, "score-ig": 3.0, "advantages": 0.2}
    seconds["train-step"] = 9.4
    assert iteration_description(3, metrics, seconds) == (
        "Iteration 3: reward 0.45, EM 0.45, 2.6 turns, clip 2.6%; 21 s "
        "(rollout 6 s, score-ig 3 s, train 9 s)"
    )
    rows = explain_blank_ig([{"turn": 0, "ig_mean": 0.1}, {"turn": 1, "ig_mean": math.nan}])
    assert [r["note"] for r in rows] == ["", NO_IG_NOTE]


def test_links_to_a_prefect_server_and_to_a_temporary_one():
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    from a2tgpo.cli import run_links
    from flows.reporting import flow_run_links

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4321/api"}):
        links = flow_run_links("abc")
    assert links == {"url": "http://127.0.0.1:4321/runs/flow-run/abc", "command": ""}
    with temporary_settings(restore_defaults={PREFECT_API_URL, PREFECT_UI_URL}):
        links = flow_run_links("abc")
    assert links["url"].endswith(":4200/runs/flow-run/abc")
    assert (
        links["command"].startswith("PREFECT_HOME=") and "prefect server start" in links["command"]
    )
    lines = run_links(
        {
            "storage": "/data/runs/x",
            "mlflow": "http://127.0.0.1:5000/#/experiments/1/runs/r",
            "mlflow_ui": "mlflow ui --backend-store-uri sqlite:////data/runs/mlflow.db",
            "prefect": links["url"],
            "prefect_ui": links["command"],
        }
    )
    assert "mlflow ui --backend-store-uri sqlite:////data/runs/mlflow.db" in lines[1]
    assert links["url"] in lines[2] and links["command"] in lines[2]


# --- one tiny flow run ------------------------------------------------------------------


@pytest.fixture(scope="module")
def identity_run(prefect_harness, mlflow_template, tmp_path_factory):
    """The tiny run started as from Prefect's form: preset a2tgpo, a partial `config`
    and `overrides`; (its config, the flow's result)."""
    from flows.train import train_flow

    base = tmp_path_factory.mktemp("identity")
    shutil.copy(mlflow_template, base / "mlflow.db")
    run_id = f"identity-{uuid.uuid4().hex[:6]}"
    overrides = [
        *TINY_RUN,
        "iterations=1",
        "rollout.engine=hf",
        f"storage.root={base / 'runs'}",
        f"tracking.mlflow_uri=sqlite:///{base / 'mlflow.db'}",
        "tracking.system_metrics_s=1",
        f"run_id={run_id}",
    ]
    partial = {"eval": {"initial": False}}
    result = train_flow(preset="a2tgpo", overrides=overrides, config=partial)
    return resolve_config("a2tgpo", overrides, partial), result


@pytest.fixture(scope="module")
def mlflow_run(identity_run):
    from mlflow.tracking import MlflowClient

    config, result = identity_run
    client = MlflowClient(config.tracking.mlflow_uri)
    return client, client.get_run(result["mlflow_run_id"])


@pytest.mark.slow
def test_flow_run_name_tags_and_parameters(identity_run):
    from prefect.client.orchestration import get_client

    config, result = identity_run
    assert config.train.learning_rate == preset("a2tgpo").train.learning_rate  # the preset's
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(result["prefect_flow_run_id"])
    assert flow_run.name == f"a2tgpo-{config.run_id}"
    assert {"preset:a2tgpo", "estimator:a2tgpo", f"a2tgpo-run:{config.run_id}"} <= set(
        flow_run.tags
    )
    assert flow_run.parameters["preset"] == "a2tgpo"
    assert flow_run.state.is_completed()


@pytest.mark.slow
def test_mlflow_run_name_description_and_prefect_link(identity_run, mlflow_run):
    from prefect.settings import get_current_settings

    config, result = identity_run
    _, run = mlflow_run
    assert run.info.run_name == f"a2tgpo · {config.run_id}"
    tags = run.data.tags
    flow_run_id = result["prefect_flow_run_id"]
    ui = get_current_settings().ui_url  # the test harness's server
    assert tags["prefect.flow_run_id"] == flow_run_id
    assert tags["prefect.flow_run_url"] == f"{ui}/runs/flow-run/{flow_run_id}" == result["prefect"]
    note = tags["mlflow.note.content"]
    assert "**a2tgpo**" in note and "adaptive clip on" in note and "tiny model" in note
    assert result["storage"] in note and tags["prefect.flow_run_url"] in note
    assert result["mlflow"].endswith(
        f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    )
    assert result["mlflow_ui"] == f"mlflow ui --backend-store-uri {config.tracking.mlflow_uri}"


@pytest.mark.slow
def test_estimator_switches_resolved_and_system_metrics(mlflow_run):
    _, run = mlflow_run
    params = run.data.params
    for switch in ("turn_group_norm", "variance_rescale", "adaptive_clip", "ig_coef"):
        assert params[f"estimator.{switch}"] not in ("None", ""), switch
    assert params["estimator.turn_group_norm"] == "True" and params["estimator.ig_coef"] == "0.3"
    system = {k for k in run.data.metrics if k.startswith("system/")}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system


@pytest.mark.slow
def test_prompt_datasets_are_inputs(mlflow_run):
    _, run = mlflow_run
    inputs = {
        d.dataset.name: ({t.key: t.value for t in d.tags}, d.dataset)
        for d in run.inputs.dataset_inputs
    }
    assert set(inputs) == {"prompts-train", "eval-prompts"}
    tags, dataset = inputs["prompts-train"]
    assert tags["mlflow.data.context"] == "training"
    assert json.loads(dataset.source)["uri"].endswith("/prompts-train")
    assert json.loads(dataset.profile)["num_rows"] > 0


@pytest.mark.slow
def test_final_policy_is_a_registrable_model(identity_run, mlflow_run):
    import mlflow

    config, result = identity_run
    client, run = mlflow_run
    (output,) = run.outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    assert model.name == "policy" and model.status.to_proto() == model.status.READY.to_proto()
    assert model.tags["a2tgpo.policy_uri"] == result["policy"]
    assert run.data.tags["a2tgpo.policy_model_id"] == model.model_id
    assert "time/log_model_s" in run.data.metrics
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(config.tracking.mlflow_uri)
    try:
        version = mlflow.register_model(f"models:/{model.model_id}", f"{config.run_id}-policy")
        pipeline = mlflow.transformers.load_model(f"models:/{config.run_id}-policy/1")
    finally:
        mlflow.set_tracking_uri(previous)
    assert str(version.version) == "1" and version.source == f"models:/{model.model_id}"
    assert pipeline.task == "text-generation"


@pytest.mark.slow
def test_iteration_artifact_reads_as_a_sentence(identity_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    config, _ = identity_run
    key = f"{config.run_id}-iteration-00000"
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    assert artifact.description.startswith("Iteration 0: reward ")
    # the total, then the stages that took a second or more (a tiny rollout may not)
    assert re.search(r"; \d+ s \([a-z-]+ \d+ s", artifact.description), artifact.description
    assert "{" not in artifact.description
    rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert all("note" in row for row in rows)
