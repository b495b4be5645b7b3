"""Every YAML and JSON file of deployments/ and infra/ parses."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.infra.helpers import DEPLOYMENTS, INFRA

FILES = sorted(
    path
    for folder in (DEPLOYMENTS, INFRA)
    for pattern in ("*.yaml", "*.yml", "*.json")
    for path in folder.rglob(pattern)
)


def test_there_are_files_to_check():
    names = {path.name for path in FILES}
    assert {"prefect.yaml", "k8s-gpu-base-job-template.json", "kustomization.yaml"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_file_parses(path):
    if path.suffix == ".json":
        assert isinstance(json.loads(path.read_text()), dict)
    else:
        documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        assert documents, f"{path} holds no YAML document"
        assert all(isinstance(doc, dict) for doc in documents)
