"""Paths and loaders shared by the deployment and infrastructure checks (tests/infra)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from prefect.utilities.annotations import NotSet
from prefect.utilities.templating import apply_values

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENTS = ROOT / "deployments"
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
PREFECT_YAML = DEPLOYMENTS / "prefect.yaml"
JOB_TEMPLATE = DEPLOYMENTS / "k8s-gpu-base-job-template.json"
SECRETS_TEMPLATE = K8S / "secrets.example.yaml"
NAMESPACE = "a2tgpo"
LOCAL_POOL = "a2tgpo-local"
K8S_POOL = "a2tgpo-k8s-gpu"


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def deployments() -> list[dict[str, Any]]:
    return yaml.safe_load(PREFECT_YAML.read_text())["deployments"]


def deployment_id(deployment: dict[str, Any]) -> str:
    """`flow-entrypoint-function/name`, unique where names repeat across flows."""
    return f"{deployment['entrypoint'].rsplit(':', 1)[1]}/{deployment['name']}"


def job_template() -> dict[str, Any]:
    return json.loads(JOB_TEMPLATE.read_text())


def render_job_configuration(
    template: dict[str, Any], job_variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The job configuration a worker builds for a flow run, as Prefect 3.9 does it.

    Mirrors `BaseJobConfiguration.from_template_and_values` (prefect.workers.base): the
    variables' non-null defaults, overridden by the deployment's job variables, applied
    to `job_configuration` with `apply_values`, which drops every key whose placeholder
    has no value. (Block and Prefect-variable references, which it also resolves, are
    not used by this template.)
    """
    properties = template["variables"].get("properties", {})
    values = {
        name: spec["default"]
        for name, spec in properties.items()
        if spec.get("default") is not None
    }
    values.update(job_variables or {})
    rendered = apply_values(template["job_configuration"], values)
    assert rendered is not NotSet
    return rendered


def secrets_template() -> dict[str, dict[str, str]]:
    """Secret name -> {key: placeholder} from infra/k8s/secrets.example.yaml."""
    return {
        doc["metadata"]["name"]: doc.get("stringData", {})
        for doc in load_yaml_documents(SECRETS_TEMPLATE)
        if doc.get("kind") == "Secret"
    }
