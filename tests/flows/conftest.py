"""Fixtures of the flow tests: Prefect's test harness, a template MLflow store, tiny settings."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from a2tgpo.config import RunConfig
from a2tgpo.presets import resolve_config
from tests.conftest import BUCKET, REGION

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

TINY_RUN = [
    "iterations=2",
    "env.num_entities=8",
    "model.tiny_max_positions=1024",
    "rollout.prompts_per_iteration=4",
    "rollout.group_size=4",
    "rollout.max_turns=3",
    "rollout.max_total_tokens=640",
    "rollout.kv_cache_gib=0.25",
    "warmstart.examples=48",
    "warmstart.epochs=1",
    "train.ppo_epochs=1",
    "train.mini_batches=1",
    "eval.every=1",
    "eval.prompts=4",
    "eval.sampled_group=2",
]


@pytest.fixture
def s3_run_config(s3_endpoint: str, mlflow_uri: str, tmp_path: Path) -> RunConfig:
    """The tiny run on the moto S3 store, tracked in a fresh MLflow sqlite file."""
    return s3_config(s3_endpoint, mlflow_uri, tmp_path)


def s3_config(s3_endpoint: str, mlflow_uri: str, tmp_path: Path) -> RunConfig:
    """The tiny run on a new prefix of the moto S3 store, tracked at `mlflow_uri`, its
    stage cache under `tmp_path`."""
    os.environ["A2TGPO_CACHE"] = str(tmp_path / "cache")
    prefix = uuid.uuid4().hex[:8]
    return resolve_config(
        "embedded",
        [
            *TINY_RUN,
            f"storage.root=s3://{BUCKET}/{prefix}",
            f"storage.endpoint_url={s3_endpoint}",
            f"storage.region={REGION}",
            f"tracking.mlflow_uri={mlflow_uri}",
        ],
    )
