"""What the config refuses before anything runs: credentials in any URL field, run ids that
would leave the storage root, unsupported stores; and where MLflow writes by default."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from a2tgpo.config import RunConfig
from a2tgpo.config_ops import apply_overrides
from a2tgpo.data.storage import Storage
from a2tgpo.layout import RunLayout

SECRET = "hunter2Secret"


@pytest.mark.parametrize(
    "section, field, value",
    [
        ("env", "retriever_url", f"http://user:{SECRET}@retriever:8000/retrieve"),
        ("env", "retriever_url", f"https://{SECRET}@retriever/retrieve"),
        ("env", "retriever_url", f"http://retriever/retrieve?token={SECRET}"),
        ("env", "retriever_url", f"http://retriever/retrieve?topk=3&api_key={SECRET}"),
        ("tracking", "mlflow_uri", f"postgresql://mlflow:{SECRET}@db:5432/mlflow"),
        ("tracking", "mlflow_uri", f"https://mlflow.example/?access_token={SECRET}"),
        ("storage", "root", f"s3://AKIDX:{SECRET}@bucket/runs"),
        ("storage", "root", f"s3://AKIDX:{SECRET}/with/slash@bucket/runs"),
        ("storage", "endpoint_url", f"http://minio:{SECRET}@minio:9000"),
        ("model", "policy", f"https://{SECRET}@hub.example/org/model"),
        ("env", "dataset", f"https://data.example/t.parquet?X-Amz-Signature={SECRET}"),
        ("env", "corpus", f"s3://bucket/c.jsonl?X-Amz-Security-Token={SECRET}"),
    ],
)
def test_credentials_in_url_fields_are_refused_without_echoing_them(section, field, value):
    with pytest.raises(ValidationError) as caught:
        RunConfig.model_validate({section: {field: value}})
    text = str(caught.value)
    assert "environment" in text and f"{section}.{field}" in text.replace("\n", ".")
    assert SECRET not in text and SECRET not in repr(caught.value)


def test_assignment_is_checked_too():
    config = RunConfig()
    with pytest.raises(ValidationError):
        config.env.retriever_url = f"http://u:{SECRET}@h/retrieve"
    assert config.env.retriever_url == ""


@pytest.mark.parametrize(
    "section, field, value",
    [
        ("env", "retriever_url", "http://retriever:8000/retrieve?topk=3"),
        ("tracking", "mlflow_uri", "sqlite:////tmp/x/mlflow.db"),
        ("tracking", "mlflow_uri", "http://mlflow:5000"),
        ("storage", "root", "s3://bucket/some/prefix"),
        ("storage", "root", "runs@2026/local"),  # a local folder may hold an "@"
        ("storage", "endpoint_url", "http://127.0.0.1:9000"),
        ("model", "policy", "Qwen/Qwen2.5-7B-Instruct"),
        ("env", "dataset", "data/monkey=1?.parquet"),
    ],
)
def test_ordinary_urls_and_paths_are_accepted(section, field, value):
    config = RunConfig.model_validate({section: {field: value}})
    assert getattr(getattr(config, section), field) == value


@pytest.mark.parametrize("root", ["gs://bucket/x", "s3://Not_A_Bucket/x", "http://h/x"])
def test_unsupported_storage_roots_are_refused_by_the_config(root):
    with pytest.raises(ValidationError, match=r"storage\.root"):
        RunConfig.model_validate({"storage": {"root": root}})


@pytest.mark.parametrize(
    "run_id", ["../../escaped", "a/b", ".hidden", "", "a..b", "x" * 129, "r\x00", "/abs"]
)
def test_run_ids_that_could_leave_the_storage_root_are_refused(run_id):
    with pytest.raises(ValidationError, match="run_id"):
        RunConfig(run_id=run_id)


def test_numeric_and_dotted_run_ids_are_fine():
    for run_id in ("123", "exp-1.2_a", "cmp-hard-grpo-s0"):
        assert RunConfig(run_id=run_id).run_id == run_id


def test_overrides_keep_strings_for_string_fields():
    config = apply_overrides(
        RunConfig(),
        ["run_id=123", "ig.answer_prefix=1", "storage.endpoint_url=null", "train.ppo_epochs=2"],
    )
    assert config.run_id == "123" and config.ig.answer_prefix == "1"
    assert config.storage.endpoint_url is None and config.train.ppo_epochs == 2


def test_the_layout_refuses_a_run_id_that_skipped_validation(tmp_path: Path):
    """`model_copy(update=...)` does not validate: the layout checks again."""
    config = RunConfig(storage={"root": str(tmp_path / "store")})
    escaped = config.model_copy(update={"run_id": "../../escaped"})
    with pytest.raises(ValueError, match="run_id"):
        RunLayout.of(escaped).uri("model-init")
    assert not (tmp_path / "escaped").exists()


@pytest.mark.parametrize("parts", [("..", "x"), ("a/../../x",), ("run", "..")])
def test_storage_join_never_leaves_its_base(tmp_path: Path, parts):
    storage = Storage(RunConfig(storage={"root": str(tmp_path)}).storage)
    with pytest.raises(ValueError, match=r"\.\."):
        storage.join(*parts)
    with pytest.raises(ValueError, match=r"\.\."):
        storage.join(str(tmp_path / "stage"), *parts)


def test_mlflow_writes_nothing_into_the_working_directory_for_an_s3_store(
    tmp_path: Path, monkeypatch
):
    from a2tgpo.tracking.mlflow_logger import artifact_root, tracking_uri

    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("A2TGPO_CACHE", str(cache))
    config = RunConfig(storage={"root": "s3://bucket/runs"})
    uri, artifacts = tracking_uri(config), artifact_root(config)
    assert uri.startswith(f"sqlite:///{cache}") and artifacts.startswith(cache.as_uri())
    assert os.listdir(work) == []


@pytest.mark.slow
def test_a_refused_value_never_reaches_prefect(prefect_harness, tmp_path: Path, monkeypatch):
    """Prefect stores a flow run's parameters when it creates the run, before the flow body
    (or Prefect's own parameter validation) runs: the CLI must refuse first."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from typer.testing import CliRunner

    from a2tgpo.cli import app

    @flow
    def probe(value: str) -> str:
        return value

    probe("stored-as-given")  # shows that parameters are read back below
    monkeypatch.chdir(tmp_path)
    root = f"s3://AKIDX:{SECRET}@bucket/runs"
    result = CliRunner().invoke(app, ["train", "--set", f"storage.root={root}"])
    assert result.exit_code != 0
    with get_client(sync_client=True) as client:
        stored = [run.parameters for run in client.read_flow_runs()]
    assert {"value": "stored-as-given"} in stored
    assert not any(SECRET in repr(parameters) for parameters in stored), stored
