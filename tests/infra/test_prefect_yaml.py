"""deployments/prefect.yaml against the flows, the config tree and the cluster manifests.

The entry points must be Prefect flows with the expected names, every deployment's
parameters must bind to its flow's signature, and `preset` + `overrides` must resolve
to a valid RunConfig through the flows' own resolver. Cluster deployments must point
at services the manifests define and fit their GPUs.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
from prefect.client.schemas.schedules import CronSchedule
from prefect.flows import Flow, load_flow_from_entrypoint

from tests.infra.helpers import (
    INFRA,
    K8S_POOL,
    LOCAL_POOL,
    NAMESPACE,
    ROOT,
    deployment_id,
    deployments,
    job_template,
)

DEPLOYMENTS = deployments()
FLOW_NAMES = {
    "flows/train.py:train_flow": "a2tgpo-train",
    "flows/evaluate.py:evaluate_flow": "a2tgpo-evaluate",
    "flows/sweep.py:sweep_flow": "a2tgpo-sweep",
}
SWEEP = "flows/sweep.py:sweep_flow"
RUN_DEPLOYMENTS = [d for d in DEPLOYMENTS if d["entrypoint"] != SWEEP]
SWEEP_DEPLOYMENTS = [d for d in DEPLOYMENTS if d["entrypoint"] == SWEEP]
IMAGE_WORKDIR = "/opt/a2tgpo"


@pytest.fixture(scope="module")
def flows() -> dict[str, Flow]:
    """The real flows, loaded as `prefect deploy` loads them."""
    loaded = {}
    for entrypoint in FLOW_NAMES:
        path = ROOT / entrypoint.split(":")[0]
        loaded[entrypoint] = load_flow_from_entrypoint(str(path) + ":" + entrypoint.split(":")[1])
    return loaded


def test_deployments_cover_both_pools_and_flows():
    pairs = {(d["entrypoint"], d["work_pool"]["name"]) for d in DEPLOYMENTS}
    assert pairs == {(e, p) for e in FLOW_NAMES for p in (LOCAL_POOL, K8S_POOL)}
    ids = [deployment_id(d) for d in DEPLOYMENTS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=deployment_id)
def test_deployment_fields(deployment):
    assert re.fullmatch(r"[a-z0-9-]+", deployment["name"])
    assert deployment["description"].strip()
    assert "a2tgpo" in deployment["tags"]
    assert deployment["entrypoint"] in FLOW_NAMES
    wanted = {"presets", "seeds"} if deployment["entrypoint"] == SWEEP else {"preset"}
    assert wanted | {"overrides"} <= deployment["parameters"].keys()


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=deployment_id)
def test_entry_point_is_the_named_flow(deployment, flows):
    flow = flows[deployment["entrypoint"]]
    assert isinstance(flow, Flow)
    assert flow.name == FLOW_NAMES[deployment["entrypoint"]]


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=deployment_id)
def test_parameters_bind_to_the_flow(deployment, flows):
    flow = flows[deployment["entrypoint"]]
    parameters = deployment["parameters"]
    assert parameters.keys() <= flow.parameters.properties.keys()
    flow.validate_parameters(parameters)  # pydantic over the signature, as a run does


@pytest.mark.parametrize("deployment", SWEEP_DEPLOYMENTS, ids=deployment_id)
def test_sweep_members_resolve_and_dispatch_to_a_deployment(deployment):
    from a2tgpo.sweep import SweepSpec, plan_members

    p = deployment["parameters"]
    members = plan_members(SweepSpec(p["sweep_id"], p["presets"], p["seeds"], p["overrides"]))
    assert len(members) == len(p["presets"]) * len(p["seeds"])
    target = p.get("work_pool_deployment", "")
    if target:  # members go to a deployment of the training flow that this file defines
        flow, name = target.split("/")
        assert any(
            FLOW_NAMES[d["entrypoint"]] == flow and d["name"] == name for d in RUN_DEPLOYMENTS
        ), target


@pytest.mark.parametrize("deployment", RUN_DEPLOYMENTS, ids=deployment_id)
def test_preset_and_overrides_resolve_to_a_config(deployment, flows):
    from a2tgpo.presets import PRESETS, resolve_config

    parameters = deployment["parameters"]
    assert parameters["preset"] in PRESETS
    config = resolve_config(parameters["preset"], parameters["overrides"])
    for key, value in parameters["overrides"].items():
        node = config
        for part in key.split("."):
            node = getattr(node, part)
        assert node == value, key


@pytest.mark.parametrize(
    "deployment",
    [d for d in RUN_DEPLOYMENTS if d["work_pool"]["name"] == K8S_POOL],
    ids=deployment_id,
)
def test_cluster_deployment_fits_its_pod(deployment, k8s_objects):
    overrides = deployment["parameters"]["overrides"]
    job_variables = deployment["work_pool"]["job_variables"]
    gpus = job_variables.get(
        "gpu_count", job_template()["variables"]["properties"]["gpu_count"]["default"]
    )
    assert overrides.get("train.num_gpus", 0) <= gpus
    assert overrides.get("rollout.tensor_parallel_size", 1) <= max(gpus, 1)
    # The code is in the image, where the Dockerfile puts it.
    assert deployment["pull"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": IMAGE_WORKDIR}}
    ]
    assert f"WORKDIR {IMAGE_WORKDIR}" in (INFRA / "Dockerfile").read_text()
    # Storage and tracking are the cluster's services (Service name and port).
    assert overrides["storage.root"].startswith("s3://")
    services = {o["metadata"]["name"]: o for o in k8s_objects if o["kind"] == "Service"}
    for key in ("storage.endpoint_url", "tracking.mlflow_uri"):
        url = urlparse(overrides[key])
        name, namespace = url.hostname.split(".")[:2]
        assert namespace == NAMESPACE, key
        assert url.port in {p["port"] for p in services[name]["spec"]["ports"]}, key


@pytest.mark.parametrize(
    "deployment",
    [d for d in DEPLOYMENTS if d["work_pool"]["name"] == LOCAL_POOL],
    ids=deployment_id,
)
def test_local_deployment_runs_in_the_checkout(deployment):
    # No pull step: `prefect deploy` records the directory it runs in (the repository
    # root, where the entry points resolve) as the runs' working directory.
    assert "pull" not in deployment
    assert (ROOT / Path(deployment["entrypoint"].split(":")[0])).name.endswith(".py")
    job_variables = deployment["work_pool"].get("job_variables") or {}
    assert set(job_variables) <= {"env"}  # no working_dir override: the checkout is the cwd


def test_schedules():
    schedules = {deployment_id(d): s for d in DEPLOYMENTS for s in d.get("schedules", []) or []}
    assert schedules, "no schedule example"
    for schedule in schedules.values():
        CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    assert schedules["evaluate_flow/gpu-nightly"]["active"] is True
    assert schedules["train_flow/gpu"]["active"] is False, "the weekly training starts paused"
