"""Shared fixtures: a real S3 endpoint (moto's server on 127.0.0.1) and store configs, and
one tiny model with one engine of each kind for the whole session.

The vLLM engine starts once per session (~30 s on CPU: an engine-core child process
and a warm-up) and is shut down explicitly at session end; every suite that needs a
real engine shares it.

`s3_endpoint` starts moto's ThreadedMotoServer once per session (as s3fs's own test
suite does), creates the bucket `BUCKET` and sets dummy AWS credentials in the
environment for the session. `storage_config` is parametrized: the same test runs
against a fresh local folder and a fresh prefix of that bucket.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from a2tgpo.config import StorageConfig

# Before vllm is first imported: its INFO logs would drown pytest's output.
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

# Property tests draw the same examples on every run (CI must not turn red by chance);
# HYPOTHESIS_PROFILE=explore draws fresh ones.
from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

CORPUS_LINES = [
    "<think>I need the mother of Alice Smith.</think> <search>Alice Smith mother</search>",
    "<information>Doc 1: Alice Smith was born in Paris. Her mother is Carol Jones.</information>",
    "<think>Carol Jones is the mother, so that is the answer.</think> <answer>Carol Jones</answer>",
    "Question: where was the father of Bob Brown born? Answer with the name of a city.",
    "<search>Bob Brown father</search> <information>Bob Brown's father is Dan Brown.</information>",
    "The quick brown fox jumps over the lazy dog; numbers 12345 and unicode: Zürich, 東京.",
]
MAX_MODEL_LEN = 512


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return CORPUS_LINES * 20


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, corpus: list[str]) -> Path:
    from a2tgpo.engines import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", corpus, seed=0)


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def chat_prompts(tokenizer) -> list[list[int]]:
    """A few ChatML prompts ending in the assistant header, as token ids."""
    questions = ["Who is the mother of Alice Smith?", "Where was Bob born?", "Name a city."]
    text = [
        tokenizer.apply_chat_template(
            [{"role": "system", "content": "Search, then answer."}, {"role": "user", "content": q}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for q in questions
    ]
    return [tokenizer.encode(t) for t in text]


@pytest.fixture(scope="session")
def hf_engine(tiny_model_dir: Path):
    from a2tgpo.engines import make_engine

    with make_engine("hf", tiny_model_dir, dtype="float32", max_model_len=MAX_MODEL_LEN) as engine:
        yield engine


@pytest.fixture(scope="session")
def vllm_engine(tiny_model_dir: Path):
    from a2tgpo.engines import make_engine  # vLLM is part of the environment: never skipped

    engine = make_engine(
        "vllm", tiny_model_dir, dtype="float32", max_model_len=MAX_MODEL_LEN, kv_cache_gib=0.5
    )
    try:
        yield engine
    finally:
        engine.close()


BUCKET = "a2tgpo-test"
REGION = "us-east-1"
_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",  # never try the instance metadata endpoint
}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """http://127.0.0.1:<port> of a moto S3 server holding an empty bucket BUCKET."""
    import boto3
    from moto.server import ThreadedMotoServer

    saved = {key: os.environ.get(key) for key in _AWS_ENV}
    os.environ.update(_AWS_ENV)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name=REGION).create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(params=["local", "s3"])
def storage_config(request: pytest.FixtureRequest, tmp_path) -> StorageConfig:
    """A fresh, empty store: a tmp folder, or a unique prefix in the moto bucket."""
    if request.param == "local":
        return StorageConfig(root=str(tmp_path / "store"))
    return StorageConfig(
        root=f"s3://{BUCKET}/{uuid.uuid4().hex[:10]}",
        endpoint_url=request.getfixturevalue("s3_endpoint"),
        region=REGION,
    )


# --- the flow suites' fixtures (tests/flows, tests/faults) ----------------------------


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    # a loaded machine starts Prefect's server slowly: 180 s, not the harness's 30 s
    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty MLflow sqlite store (creating one takes ~6 s: copy it per test)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow") / "template.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_uri(mlflow_template: Path, tmp_path: Path) -> str:
    db = tmp_path / "mlflow.db"
    shutil.copy(mlflow_template, db)
    return f"sqlite:///{db}"
