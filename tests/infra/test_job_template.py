"""The Kubernetes work pool's base job template (deployments/k8s-gpu-base-job-template.json).

Checks it the way Prefect uses it: the server's own validation on pool creation, the
variables as a JSON schema whose defaults validate, and the job configuration rendered
like a worker renders it (defaults, then a deployment's job variables), which must give
a Job that requests `gpu_count` GPUs, with the node selector and tolerations asked for
and credentials from Secrets only.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
from prefect.server.schemas.actions import validate_base_job_template
from prefect.utilities.schema_tools import validate as prefect_validate

from tests.infra.helpers import (
    K8S_POOL,
    NAMESPACE,
    deployment_id,
    deployments,
    job_template,
    render_job_configuration,
    secrets_template,
)

K8S_DEPLOYMENTS = [d for d in deployments() if d["work_pool"]["name"] == K8S_POOL]


def container(rendered: dict) -> dict:
    return rendered["job_manifest"]["spec"]["template"]["spec"]["containers"][0]


def pod_spec(rendered: dict) -> dict:
    return rendered["job_manifest"]["spec"]["template"]["spec"]


def test_prefect_accepts_the_template():
    template = job_template()
    assert validate_base_job_template(template) == template  # every placeholder declared


def test_variables_are_a_json_schema_with_valid_defaults():
    variables = job_template()["variables"]
    jsonschema.validators.validator_for(variables).check_schema(variables)
    for name, spec in variables["properties"].items():
        if "default" in spec and "$ref" not in json.dumps(spec):
            jsonschema.validate(spec["default"], spec)
        assert spec.get("description"), f"variable {name} has no description (the UI shows it)"
    for name in ("gpu_count", "node_selector", "tolerations", "image", "namespace", "env"):
        assert name in variables["properties"]
    for name in ("service_account_name", "cpu_request", "memory_request"):
        assert name in variables["properties"]


def test_every_variable_is_used():
    template = job_template()
    text = json.dumps(template["job_configuration"])
    for name in template["variables"]["properties"]:
        assert "{{ " + name + " }}" in text, f"variable {name} is never used"


def test_defaults_render_a_gpu_job():
    rendered = render_job_configuration(job_template())
    assert "{{" not in json.dumps(rendered), "unresolved placeholder"
    manifest = rendered["job_manifest"]
    assert (manifest["apiVersion"], manifest["kind"]) == ("batch/v1", "Job")
    assert rendered["namespace"] == manifest["metadata"]["namespace"] == NAMESPACE
    resources = container(rendered)["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == 1
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert "cpu" not in resources["limits"], "a null variable must drop its key"
    spec = pod_spec(rendered)
    assert spec["nodeSelector"] == {}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    assert spec["serviceAccountName"] == "a2tgpo-flow-run"


@pytest.mark.parametrize("gpus", [0, 2, 8])
def test_gpu_count_node_selector_and_tolerations_reach_the_pod(gpus):
    selector = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    tolerations = [{"key": "dedicated", "operator": "Equal", "value": "rl", "effect": "NoSchedule"}]
    rendered = render_job_configuration(
        job_template(),
        {"gpu_count": gpus, "node_selector": selector, "tolerations": tolerations},
    )
    resources = container(rendered)["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == gpus
    assert resources["limits"]["nvidia.com/gpu"] == gpus  # extended resources: equal
    assert pod_spec(rendered)["nodeSelector"] == selector
    assert pod_spec(rendered)["tolerations"] == tolerations


def test_shape_the_kubernetes_worker_requires():
    """prefect-kubernetes validates job manifests against a base (its worker.py,
    `_get_base_job_manifest`): these paths must exist with these values."""
    manifest = render_job_configuration(job_template())["job_manifest"]
    spec = manifest["spec"]["template"]["spec"]
    assert spec["parallelism"] == 1 and spec["completions"] == 1
    assert spec["restartPolicy"] == "Never"
    assert spec["containers"][0]["name"] == "prefect-job"
    # metadata.labels and .annotations may be absent: the worker's validator adds them.
    assert manifest["metadata"]["namespace"] == NAMESPACE


def test_credentials_only_from_secrets():
    rendered = render_job_configuration(job_template())
    secrets = secrets_template()
    env = container(rendered)["env"]
    names = {entry["name"] for entry in env}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= names
    for entry in env:
        assert "value" not in entry, f"inline value for {entry['name']}"
        ref = entry["valueFrom"]["secretKeyRef"]
        assert ref["key"] in secrets[ref["name"]]
    # The `env` variable (plain settings, merged in front by the worker) is unset by default.
    assert rendered.get("env", {}) == {}


def test_shared_memory_and_scratch_volumes():
    rendered = render_job_configuration(job_template(), {"shm_size": "32Gi"})
    volumes = {v["name"]: v for v in pod_spec(rendered)["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Gi"}
    mounts = {m["mountPath"]: m["name"] for m in container(rendered)["volumeMounts"]}
    assert mounts == {"/dev/shm": "dshm", "/scratch": "scratch"}


@pytest.mark.parametrize("deployment", K8S_DEPLOYMENTS, ids=deployment_id)
def test_deployment_job_variables(deployment):
    """As the server checks them on `prefect deploy`, then rendered as a worker would."""
    job_variables = deployment["work_pool"].get("job_variables", {})
    schema = job_template()["variables"]
    prefect_validate(
        job_variables, schema, raise_on_error=True, preprocess=True, ignore_required=True
    )
    rendered = render_job_configuration(job_template(), job_variables)
    gpus = container(rendered)["resources"]["limits"]["nvidia.com/gpu"]
    assert gpus == job_variables.get("gpu_count", schema["properties"]["gpu_count"]["default"])
    assert "{{" not in json.dumps(rendered)
