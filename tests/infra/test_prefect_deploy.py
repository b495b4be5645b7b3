"""`prefect deploy --all` of deployments/prefect.yaml against a real Prefect server.

Starts `prefect server start` on 127.0.0.1 (own PREFECT_HOME, analytics and UI off;
the `prefect_server` fixture of tests/infra/conftest.py),
creates both work pools with the commands infra/README.md gives (the Kubernetes one
from the project's base job template, which the server validates), runs
`prefect deploy` from the repository root as a user would, and reads the deployments
back over the REST API. The server checks parameters against the flows' schemas and
job variables against the pool's template on the way in.
"""

from __future__ import annotations

import httpx
import pytest
import yaml

from tests.infra.conftest import prefect_cli
from tests.infra.helpers import (
    JOB_TEMPLATE,
    K8S_POOL,
    LOCAL_POOL,
    PREFECT_YAML,
    ROOT,
    deployments,
    job_template,
)


@pytest.mark.slow
def test_prefect_deploy_all(prefect_server):
    api_url, env = prefect_server
    prefect_cli(env, "work-pool", "create", LOCAL_POOL, "--type", "process")
    prefect_cli(
        env,
        "work-pool",
        "create",
        K8S_POOL,
        "--type",
        "kubernetes",
        "--base-job-template",
        str(JOB_TEMPLATE.relative_to(ROOT)),
    )
    prefect_cli(
        env, "--no-prompt", "deploy", "--prefect-file", str(PREFECT_YAML.relative_to(ROOT)), "--all"
    )

    with httpx.Client(base_url=api_url, timeout=10) as api:
        pool = api.get(f"/work_pools/{K8S_POOL}").raise_for_status().json()
        assert pool["type"] == "kubernetes"
        assert pool["base_job_template"] == job_template()
        flows = {f["id"]: f["name"] for f in api.post("/flows/filter", json={}).json()}
        stored = {
            (flows[d["flow_id"]], d["name"]): d
            for d in api.post("/deployments/filter", json={}).raise_for_status().json()
        }

    flow_names = {
        "train_flow": "a2tgpo-train",
        "evaluate_flow": "a2tgpo-evaluate",
        "sweep_flow": "a2tgpo-sweep",
    }
    expected = deployments()
    assert len(stored) == len(expected)
    for spec in expected:
        key = (flow_names[spec["entrypoint"].rsplit(":", 1)[1]], spec["name"])
        got = stored[key]
        assert got["entrypoint"] == spec["entrypoint"]
        assert got["work_pool_name"] == spec["work_pool"]["name"]
        assert got["parameters"] == spec["parameters"]
        assert got["job_variables"] == spec["work_pool"].get("job_variables", {})
        assert got["tags"] == spec["tags"]
        assert got["enforce_parameter_schema"] is True
        directory = "/opt/a2tgpo" if spec["work_pool"]["name"] == K8S_POOL else str(ROOT)
        assert got["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": directory}}
        ]
        limit = (got.get("global_concurrency_limit") or {}).get("limit")
        assert limit == spec.get("concurrency_limit"), key
        schedules = [
            (s["schedule"]["cron"], s["schedule"]["timezone"], s["active"])
            for s in got["schedules"]
        ]
        assert schedules == [
            (s["cron"], s["timezone"], s["active"]) for s in spec.get("schedules", [])
        ]
    # The file was deployed as written: no `prefect deploy` prompt rewrote it.
    assert yaml.safe_load(PREFECT_YAML.read_text())["deployments"] == expected


def documented_deploy_names() -> list[str]:
    """Every `--name X` that infra/README.md and the prefect.yaml header tell users to run."""
    import re

    texts = [(ROOT / "infra" / "README.md").read_text(), PREFECT_YAML.read_text()]
    return sorted({m for text in texts for m in re.findall(r"--name\s+(\S+)", text)})


@pytest.mark.slow
def test_the_documented_deploy_commands_work(prefect_server):
    _, env = prefect_server
    for pool in (LOCAL_POOL, K8S_POOL):  # as test_prefect_deploy_all leaves them, or new
        args = ["work-pool", "create", pool, "--type", "process", "--overwrite"]
        if pool == K8S_POOL:
            args[4:5] = ["kubernetes", "--base-job-template", str(JOB_TEMPLATE.relative_to(ROOT))]
        prefect_cli(env, *args)
    names = documented_deploy_names()
    assert {"train_flow/local", "train_flow/gpu", "evaluate_flow/gpu-nightly"} <= set(names)
    for name in names:  # Prefect matches the entrypoint's function name, not the flow name
        prefect_cli(
            env, "--no-prompt", "deploy", "--prefect-file", str(PREFECT_YAML.relative_to(ROOT)),
            "--name", name,
        )  # fmt: skip
