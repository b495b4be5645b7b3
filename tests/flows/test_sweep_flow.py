"""A smoke sweep, end to end: 2 presets x 1 seed x 1 iteration of the tiny run (Prefect
harness, vLLM and DeepSpeed on CPU, MLflow sqlite), then a rerun that skips them."""

from __future__ import annotations

import os

import pytest
from mlflow.tracking import MlflowClient

from a2tgpo.config import StorageConfig
from a2tgpo.data.storage import Storage
from a2tgpo.sweep import SweepRecords
from flows.sweep import sweep_flow
from tests.flows.conftest import TINY_RUN

pytestmark = pytest.mark.slow


def test_smoke_sweep_nests_members_aggregates_and_resumes(prefect_harness, mlflow_uri, tmp_path):
    os.environ["A2TGPO_CACHE"] = str(tmp_path / "cache")
    overrides = [
        *(o for o in TINY_RUN if not o.startswith(("iterations=", "eval.every="))),
        "iterations=1",
        "eval.every=1",
        f"storage.root={tmp_path / 'runs'}",
        f"tracking.mlflow_uri={mlflow_uri}",
    ]
    kwargs = {"sweep_id": "smoke", "presets": ["grpo", "a2tgpo"], "seeds": [0]}
    result = sweep_flow(**kwargs, overrides=overrides)

    client = MlflowClient(mlflow_uri)
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    runs = client.search_runs([experiment.experiment_id], "tags.`a2tgpo.sweep_id` = 'smoke'")
    parent = [r for r in runs if r.data.tags.get("a2tgpo.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("a2tgpo.role") == "member"]
    assert len(parent) == 1 and len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent[0].info.run_id}
    assert {r.data.params["seed"] for r in children} == {"0"}
    assert {r.data.params["estimator.name"] for r in children} == {"grpo", "a2tgpo"}
    assert all(r.info.status == "FINISHED" for r in children)
    table = result["table"]
    assert "| grpo | 0 |" in table and "| a2tgpo | 0 |" in table
    assert "(n=1)" in table  # every aggregate says how many seeds it holds
    artifacts = {a.path for a in client.list_artifacts(parent[0].info.run_id, "comparison")}
    assert artifacts == {
        "comparison/table.md",
        "comparison/table.csv",
        "comparison/curves.png",
        "comparison/per_turn.png",
    }

    records = SweepRecords(Storage(StorageConfig(root=str(tmp_path / "runs"))), "smoke")
    before = {rid: records.member(rid) for rid in ("smoke-grpo-s0", "smoke-a2tgpo-s0")}
    assert all(r["status"] == "finished" for r in before.values())
    again = sweep_flow(**kwargs, overrides=overrides)  # finished members: skipped
    runs = client.search_runs([experiment.experiment_id], "tags.`a2tgpo.role` = 'member'")
    assert len(runs) == 2  # no member was run (or tracked) again
    assert {rid: records.member(rid) for rid in before} == before
    assert again["table"] == table
