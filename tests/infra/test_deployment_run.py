"""One deployment of deployments/prefect.yaml run through a process worker to completion.

Against a real Prefect server (the `prefect_server` fixture of tests/infra/conftest.py):
creates the local process pool, deploys `train_flow/local` by name from the repository
root as infra/README.md says, creates a flow run of it as the UI's custom-run form would
(the embedded preset, made tiny and local by `overrides`), and starts
`prefect worker start --pool a2tgpo-local --run-once` as a user would. The worker runs the
flow in a subprocess in the directory `prefect deploy` recorded (the repository root);
the test waits for the flow run to finish and checks what it did: its state, name and
tags in Prefect and the last checkpoint in the run's storage.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from a2tgpo.data.stage import read_manifest
from a2tgpo.layout import RunLayout
from a2tgpo.presets import resolve_config
from tests.flows.conftest import TINY_RUN
from tests.infra.conftest import PREFECT, prefect_cli
from tests.infra.helpers import LOCAL_POOL, PREFECT_YAML, ROOT

RUN_TIMEOUT_S = 15 * 60  # the tiny run takes a few minutes; a busy 2-core machine more
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def wait_for_final_state(api: httpx.Client, flow_run_id: str, worker, log: Path) -> dict:
    """The flow run once it is in a final state; fails when the worker exits before it or
    the run takes longer than RUN_TIMEOUT_S."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        run = api.get(f"/flow_runs/{flow_run_id}").raise_for_status().json()
        if run["state_type"] in FINAL:
            return run
        if worker.poll() is not None:  # --run-once: it exits after its run; let the state land
            time.sleep(5)
            run = api.get(f"/flow_runs/{flow_run_id}").raise_for_status().json()
            assert run["state_type"] in FINAL, (
                f"the worker exited ({worker.returncode}) with the flow run "
                f"{run['state_type']}:\n{log.read_text()[-6000:]}"
            )
            return run
        assert time.monotonic() < deadline, (
            f"flow run still {run['state_type']} after {RUN_TIMEOUT_S} s:\n"
            f"{log.read_text()[-6000:]}"
        )
        time.sleep(5)


def stop_group(process: subprocess.Popen) -> None:
    """Stop a process started with start_new_session=True and everything it started."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):  # its children, if left
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT_S + 300)
def test_train_deployment_runs_on_a_process_worker(prefect_server, tmp_path):
    api_url, env = prefect_server
    prefect_cli(env, "work-pool", "create", LOCAL_POOL, "--type", "process", "--overwrite")
    prefect_cli(
        env, "--no-prompt", "deploy", "--prefect-file", str(PREFECT_YAML.relative_to(ROOT)),
        "--name", "train_flow/local",
    )  # fmt: skip

    run_id = f"deployed-{uuid.uuid4().hex[:8]}"
    overrides = [
        *TINY_RUN,
        "rollout.engine=hf",
        f"storage.root={tmp_path / 'runs'}",
        f"tracking.mlflow_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"run_id={run_id}",
    ]
    parameters = {"preset": "embedded", "overrides": overrides}

    with httpx.Client(base_url=api_url, timeout=30) as api:
        deployment = api.get("/deployments/name/a2tgpo-train/local").raise_for_status().json()
        assert deployment["work_pool_name"] == LOCAL_POOL
        created = api.post(  # what the UI's custom-run form sends
            f"/deployments/{deployment['id']}/create_flow_run", json={"parameters": parameters}
        )
        assert created.status_code == 201, created.text  # the parameter schema accepted it
        flow_run_id = created.json()["id"]

        worker_env = {
            **env,
            "A2TGPO_CACHE": str(tmp_path / "cache"),  # not the user's ~/.cache
            "PREFECT_WORKER_QUERY_SECONDS": "2",
        }
        log_path = tmp_path / "worker.log"
        with log_path.open("w") as log:
            worker = subprocess.Popen(
                [*PREFECT, "worker", "start", "--pool", LOCAL_POOL, "--run-once"],
                cwd=tmp_path,  # the flow runs where the deployment says, not here
                env=worker_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                run = wait_for_final_state(api, flow_run_id, worker, log_path)
            finally:
                stop_group(worker)
        print(f"worker log: {log_path}")

        assert run["state_type"] == "COMPLETED", (
            f"flow run {run['state_name']}: {run['state'].get('message')}\n"
            f"{log_path.read_text()[-6000:]}"
        )
        assert run["deployment_id"] == deployment["id"]
        assert run["name"] == f"embedded-{run_id}"
        assert "preset:embedded" in run["tags"]
        assert f"a2tgpo-run:{run_id}" in run["tags"]
        assert set(deployment["tags"]) <= set(run["tags"])  # the deployment's own tags

    config = resolve_config("embedded", overrides)
    layout = RunLayout.of(config)
    last = layout.stage(config.iterations - 1, "checkpoint")
    manifest = read_manifest(layout.storage, last)
    assert manifest is not None, f"no checkpoint manifest at {last}"
    assert manifest.policy_version == config.iterations
