"""`a2tgpo sweep --work-pool-deployment`: members run as deployment runs on a real work pool.

A Prefect server (the fixture of test_prefect_deploy), a process work pool with a worker,
the training flow deployed on it, and the sweep started from the CLI as a user would:
each member is submitted with `run_deployment`, picked up by the worker and run in its
own process; the sweep records them, nests their MLflow runs and prints the table.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.flows.conftest import TINY_RUN
from tests.infra.conftest import PREFECT, prefect_cli
from tests.infra.helpers import ROOT

POOL = "sweep-test-pool"
SWEEP_TIMEOUT_S = 1500


def deploy_train_flow(env: dict[str, str], tmp_path: Path) -> str:
    spec = {
        "name": "a2tgpo-sweep-test",
        "prefect-version": "3.9.1",
        "build": None,
        "push": None,
        "deployments": [
            {
                "name": "pool-test",
                "entrypoint": "flows/train.py:train_flow",
                "parameters": {},
                "work_pool": {"name": POOL, "work_queue_name": "default"},
            }
        ],
    }
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump(spec))
    prefect_cli(env, "work-pool", "create", POOL, "--type", "process")
    prefect_cli(env, "--no-prompt", "deploy", "--prefect-file", str(path), "--all")
    return "a2tgpo-train/pool-test"


@pytest.mark.slow
def test_sweep_members_run_on_a_work_pool(prefect_server, tmp_path):
    api_url, env = prefect_server
    env = {**env, "A2TGPO_CACHE": str(tmp_path / "cache"), "VLLM_LOGGING_LEVEL": "WARNING"}
    deployment = deploy_train_flow(env, tmp_path)
    worker_log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 (closed below)
    worker = subprocess.Popen(
        [*PREFECT, "worker", "start", "--pool", POOL, "--type", "process"],
        cwd=ROOT, env=env, stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = [o for o in TINY_RUN if not o.startswith(("iterations=", "eval.every="))]
    overrides += ["iterations=1", "eval.every=1", f"storage.root={tmp_path / 'runs'}"]
    overrides += [f"tracking.mlflow_uri={mlflow_uri}"]
    argv = [sys.executable, "-c", "from a2tgpo.cli import main; main()", "sweep"]
    argv += ["--presets", "grpo,a2tgpo", "--seeds", "1", "--sweep-id", "pool"]
    argv += ["--work-pool-deployment", deployment]
    for item in overrides:
        argv += ["--set", item]
    try:
        sweep = subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S
        )
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
        worker_log.close()
    log = (tmp_path / "worker.log").read_text()[-6000:]
    assert sweep.returncode == 0, f"{sweep.stdout[-4000:]}\n{sweep.stderr[-6000:]}\n{log}"
    assert "| grpo | 0 |" in sweep.stdout and "| a2tgpo | 0 |" in sweep.stdout

    for preset in ("grpo", "a2tgpo"):  # dispatched through the pool, not run in-process
        record = json.loads(
            (tmp_path / "runs/sweeps/pool/members" / f"pool-{preset}-s0.json").read_text()
        )
        assert record["status"] == "finished" and record["flow_run"], record
    with httpx.Client(base_url=api_url, timeout=10) as api:
        runs = api.post("/flow_runs/filter", json={}).raise_for_status().json()
    pooled = [r for r in runs if r.get("work_pool_name") == POOL]
    assert len(pooled) == 2 and all(r["state_type"] == "COMPLETED" for r in pooled)
    assert all(r["parent_task_run_id"] for r in pooled)  # shown under the sweep in the UI

    client = MlflowClient(mlflow_uri)
    children = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`a2tgpo.role` = 'member'"
    )
    assert len(children) == 2 and len({r.data.tags["mlflow.parentRunId"] for r in children}) == 1
