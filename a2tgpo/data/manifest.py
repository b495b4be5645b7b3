"""The manifest of a committed stage (`{stage}/manifest.json`) and its code version.

A manifest says what a stage holds (a dataset of a named schema, or a folder such as
a checkpoint), exactly which files make it up, and where it came from: the code and
policy versions that produced it and the URIs of its parent stages (lineage).
It is written last and only once (see `a2tgpo.data.commit`).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

import a2tgpo

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


class ManifestFile(BaseModel):
    """One file of a committed stage, by its path relative to the stage URI."""

    path: str
    size: int = Field(description="Bytes.")
    sha256: str
    rows: int | None = Field(None, description="Rows, for a Parquet part.")


class Manifest(BaseModel):
    """What a committed stage holds and where it came from."""

    manifest_version: int = MANIFEST_VERSION
    kind: Literal["dataset", "directory"]
    uri: str = Field(description="The stage URI the manifest was committed at.")
    schema_name: str | None = Field(None, description="Dataset schema (a2tgpo.data.schemas).")
    schema_version: int | None = None
    num_rows: int | None = None
    content_hash: str = Field(description="sha256 of the content (see `content_hash`).")
    code_version: str = Field(description="Package version, +g<git sha> when known.")
    git_sha: str | None = None
    policy_version: int | None = None
    parents: list[str] = Field(default_factory=list, description="URIs of input stages.")
    created_at: datetime
    stats: dict[str, Any] = Field(default_factory=dict, description="Free-form, from the stage.")
    files: list[ManifestFile]
    content_root: str = Field(
        "", description="Folder (relative to the stage URI) holding a directory stage's files."
    )
    attempt: str = Field(description="Id of the writer attempt that won the commit.")

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        return cls.model_validate_json(data)


def content_hash(files: list[ManifestFile], names: list[str] | None = None) -> str:
    """sha256 over the files' sha256 in order, each preceded by its name when `names`
    are given (a folder's layout is part of its content; a dataset's part names,
    which hold the random attempt id, are not)."""
    digest = hashlib.sha256()
    for i, f in enumerate(files):
        if names is not None:
            digest.update(names[i].encode() + b"\0")
        digest.update(f.sha256.encode())
    return digest.hexdigest()


def check_stats(stats: dict[str, Any] | None) -> dict[str, Any]:
    """The stats dict, checked to be JSON-serializable before any part is written."""
    stats = dict(stats or {})
    try:
        json.dumps(stats)
    except (TypeError, ValueError) as e:
        raise ValueError(f"stats must be JSON-serializable: {e}") from None
    return stats


def now() -> datetime:
    return datetime.now(UTC)


@lru_cache(maxsize=1)
def git_sha() -> str | None:
    """HEAD of the repository holding the package (+'-dirty' with local changes).

    A2TGPO_GIT_SHA overrides it (images built without .git set it at build time).
    """
    if os.environ.get("A2TGPO_GIT_SHA"):
        return os.environ["A2TGPO_GIT_SHA"]
    repo = Path(a2tgpo.__file__).resolve().parent.parent
    try:
        sha = _git(repo, "rev-parse", "HEAD")
        dirty = _git(repo, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    if not sha:
        return None
    return sha[:12] + ("-dirty" if dirty else "")


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10, check=True
    )
    return out.stdout.strip()


def code_version() -> str:
    sha = git_sha()
    return a2tgpo.__version__ + (f"+g{sha}" if sha else "")
