"""A schema-light check of the Kubernetes manifests (infra/k8s).

No kubeconform or kubeval here (neither installs offline), so this checks in Python
what a schema check and a review would catch: known kinds with their required fields,
selectors that match their pods, references (Services -> ports, StatefulSets ->
Services, RoleBindings -> Roles and ServiceAccounts, volumes -> ConfigMaps and
PersistentVolumeClaims, env -> Secret keys, the presets' retriever URL -> the retriever
Service) that resolve, container images pinned by tag, resource requests on every
container, and credentials that reach pods only through secretKeyRef.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.infra.helpers import NAMESPACE, SECRETS_TEMPLATE, load_yaml_documents, secrets_template

KNOWN_KINDS = {
    ("v1", "Namespace"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("v1", "PersistentVolumeClaim"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("batch/v1", "Job"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
}
WORKLOADS = {"Deployment", "StatefulSet", "Job"}
CREDENTIAL_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|_USER$", re.IGNORECASE)
PINNED_IMAGE = re.compile(r"^[a-z0-9.\-/:]+:[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def pod_templates(objects: list[dict[str, Any]]):
    for obj in objects:
        if obj["kind"] in WORKLOADS:
            yield f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]


def containers(objects: list[dict[str, Any]]):
    for where, template in pod_templates(objects):
        spec = template["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            yield f"{where}/{container.get('name')}", container


def test_expected_stack(k8s_objects):
    names = {(obj["kind"], obj["metadata"]["name"]) for obj in k8s_objects}
    assert {
        ("Namespace", NAMESPACE),
        ("Deployment", "prefect-server"),
        ("Deployment", "prefect-worker"),
        ("Deployment", "mlflow"),
        ("StatefulSet", "postgres"),
        ("StatefulSet", "minio"),
        ("Job", "minio-setup"),
        ("Role", "prefect-worker"),
        ("RoleBinding", "prefect-worker"),
        ("ServiceAccount", "a2tgpo-flow-run"),
        ("ConfigMap", "a2tgpo-runtime"),
        ("Deployment", "retriever"),
        ("Service", "retriever"),
        ("PersistentVolumeClaim", "retriever-data"),
    } <= names


def test_objects_have_known_kind_and_metadata(k8s_objects):
    for obj in k8s_objects:
        assert (obj.get("apiVersion"), obj.get("kind")) in KNOWN_KINDS, obj.get("kind")
        metadata = obj.get("metadata") or {}
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", metadata.get("name", ""))
        if obj["kind"] != "Namespace":
            assert metadata.get("namespace") == NAMESPACE, metadata["name"]
    keys = [(o["kind"], o["metadata"]["name"]) for o in k8s_objects]
    assert len(keys) == len(set(keys)), "duplicate objects"


def test_no_secret_objects_in_the_kustomization(k8s_objects):
    assert not [o for o in k8s_objects if o["kind"] == "Secret"], (
        "Secrets come from secrets.example.yaml filled in by hand, never from the repo"
    )


def test_secret_templates_hold_placeholders_only():
    documents = load_yaml_documents(SECRETS_TEMPLATE)
    assert documents
    for doc in documents:
        assert doc["kind"] == "Secret" and doc["metadata"]["namespace"] == NAMESPACE
        assert "data" not in doc, "base64 `data` could hide a real value: use stringData"
        for key, value in doc["stringData"].items():
            assert re.fullmatch(r"<[a-z0-9-]+>", value), f"{key}: {value!r} is no placeholder"


def test_workloads_select_their_own_pods(k8s_objects):
    for obj in k8s_objects:
        if obj["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        selector = obj["spec"]["selector"]["matchLabels"]
        labels = obj["spec"]["template"]["metadata"]["labels"]
        assert selector and selector.items() <= labels.items(), obj["metadata"]["name"]
    for where, template in pod_templates(k8s_objects):
        assert template["spec"]["containers"], where
        if where.startswith("Job/"):
            assert template["spec"]["restartPolicy"] in {"Never", "OnFailure"}, where


def test_services_reach_a_named_container_port(k8s_objects):
    templates = [template for _, template in pod_templates(k8s_objects)]
    for name, service in by_kind(k8s_objects, "Service").items():
        selector = service["spec"]["selector"]
        pods = [t for t in templates if selector.items() <= t["metadata"]["labels"].items()]
        assert pods, f"Service {name} selects no pod"
        port_names = {
            port.get("name")
            for pod in pods
            for container in pod["spec"]["containers"]
            for port in container.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            assert isinstance(port["port"], int)
            target = port.get("targetPort", port["port"])
            assert isinstance(target, int) or target in port_names, f"{name}: {target}"


def test_statefulsets_have_their_service_and_storage(k8s_objects):
    services = by_kind(k8s_objects, "Service")
    for name, sts in by_kind(k8s_objects, "StatefulSet").items():
        assert sts["spec"]["serviceName"] in services, name
        for claim in sts["spec"].get("volumeClaimTemplates", []):
            assert claim["spec"]["resources"]["requests"]["storage"], name


def test_rbac_references_resolve(k8s_objects):
    roles = by_kind(k8s_objects, "Role")
    accounts = by_kind(k8s_objects, "ServiceAccount")
    for name, binding in by_kind(k8s_objects, "RoleBinding").items():
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["roleRef"]["name"] in roles, name
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount" and subject["name"] in accounts
    for where, template in pod_templates(k8s_objects):
        account = template["spec"].get("serviceAccountName")
        assert account is None or account in accounts, where
    worker_rules = roles["prefect-worker"]["rules"]
    job_verbs = {
        verb for rule in worker_rules if "jobs" in rule["resources"] for verb in rule["verbs"]
    }
    assert {"create", "get", "list", "watch", "delete"} <= job_verbs
    assert not any("secrets" in rule["resources"] for rule in worker_rules)


def test_volumes_reference_existing_config_maps_and_claims(k8s_objects):
    config_maps = by_kind(k8s_objects, "ConfigMap")
    pvcs = by_kind(k8s_objects, "PersistentVolumeClaim")
    for name, pvc in pvcs.items():
        assert pvc["spec"]["accessModes"], name
        assert pvc["spec"]["resources"]["requests"]["storage"], name
    for where, template in pod_templates(k8s_objects):
        volumes = template["spec"].get("volumes", [])
        for volume in volumes:
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, where
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in pvcs, where
        spec = template["spec"]
        mounts = {
            m["name"]
            for c in spec.get("initContainers", []) + spec["containers"]
            for m in c.get("volumeMounts", [])
        }
        claims = {
            claim["metadata"]["name"]
            for obj in k8s_objects
            if obj["kind"] == "StatefulSet" and obj["spec"]["template"] is template
            for claim in obj["spec"].get("volumeClaimTemplates", [])
        }
        assert mounts <= {v["name"] for v in volumes} | claims, where


def test_images_are_pinned(k8s_objects):
    for where, container in containers(k8s_objects):
        image = container["image"]
        assert PINNED_IMAGE.match(image) or "@sha256:" in image, f"{where}: {image}"
        assert not image.endswith((":latest", ":main", ":master")), f"{where}: {image}"


def test_containers_request_resources(k8s_objects):
    for where, container in containers(k8s_objects):
        requests = (container.get("resources") or {}).get("requests") or {}
        assert requests.get("cpu") and requests.get("memory"), where
        limits = (container.get("resources") or {}).get("limits") or {}
        assert limits.get("memory"), f"{where}: no memory limit"


@pytest.fixture(scope="module")
def secret_keys() -> dict[str, set[str]]:
    return {name: set(keys) for name, keys in secrets_template().items()}


def test_credentials_come_from_secrets(k8s_objects, secret_keys):
    for where, container in containers(k8s_objects):
        for entry in container.get("env", []):
            assert ("value" in entry) != ("valueFrom" in entry), f"{where}: {entry}"
            if CREDENTIAL_NAME.search(entry["name"]):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                assert ref, f"{where}: {entry['name']} must come from a secretKeyRef"
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secret_keys.get(ref["name"], set()), f"{where}: {ref}"
        for source in container.get("envFrom", []):
            assert "secretRef" not in source or source["secretRef"]["name"] in secret_keys


def test_config_maps_hold_no_credentials(k8s_objects):
    for name, config_map in by_kind(k8s_objects, "ConfigMap").items():
        for key in config_map.get("data", {}):
            assert not CREDENTIAL_NAME.search(key), f"ConfigMap {name}: {key}"


def test_presets_reach_the_retriever_service(k8s_objects):
    """Every preset that searches over HTTP at an in-cluster name finds that Service, on
    that port, in front of `a2tgpo serve-retriever` listening on all interfaces there."""
    from a2tgpo.presets import PRESETS, preset

    urls = {preset(name).env.retriever_url for name in PRESETS}
    urls = {urlsplit(url) for url in urls if url}
    in_cluster = {url for url in urls if url.hostname and "." not in url.hostname}
    assert in_cluster, "no preset points at the in-cluster retriever any more?"
    services = by_kind(k8s_objects, "Service")
    deployments = by_kind(k8s_objects, "Deployment")
    for url in in_cluster:
        assert url.path == "/retrieve", url.geturl()
        service = services.get(url.hostname)
        assert service, f"{url.geturl()}: no Service {url.hostname}"
        port = next(p for p in service["spec"]["ports"] if p["port"] == url.port)
        pods = [
            d["spec"]["template"]
            for d in deployments.values()
            if service["spec"]["selector"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        containers = [c for pod in pods for c in pod["spec"]["containers"]]
        assert containers, f"Service {url.hostname} selects no Deployment"
        for container in containers:
            args = container.get("command", []) + container.get("args", [])
            assert "serve-retriever" in args and "--host=0.0.0.0" in args
            named = {p.get("name"): p["containerPort"] for p in container["ports"]}
            assert f"--port={named[port['targetPort']]}" in args
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert container[probe]["httpGet"]["path"] == "/health", probe
