"""The Kubernetes objects of infra/k8s, built once per session.

They are what `kubectl kustomize infra/k8s` builds when kubectl is on the PATH (offline;
the machine image ships it), else the resources the kustomization lists, read directly.
Nothing here talks to a cluster.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.infra.helpers import K8S, load_yaml_documents


@pytest.fixture(scope="session")
def k8s_objects() -> list[dict[str, Any]]:
    """The objects `kubectl apply -k infra/k8s` would create."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        built = subprocess.run(
            [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
        )
        assert built.returncode == 0, f"kubectl kustomize failed:\n{built.stderr}"
        return [doc for doc in yaml.safe_load_all(built.stdout) if doc is not None]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in load_yaml_documents(K8S / name)]
