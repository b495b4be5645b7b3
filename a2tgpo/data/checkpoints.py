"""Where a policy lives, and how a stage gets it as a local HF folder.

A policy is named by a URI: a committed checkpoint folder in storage (`hf/` holding
the HF model and, after an RL step, `ds/` holding the DeepSpeed engine and optimizer
state), a plain local HF folder (a user's model), or a Hugging Face hub id (fetched
by transformers/vLLM themselves in a cluster; nothing is downloaded here).
"""

from __future__ import annotations

from pathlib import Path

from a2tgpo.data.directories import materialize
from a2tgpo.data.stage import read_manifest
from a2tgpo.data.storage import Storage


def checkpoint_parts(local: Path) -> tuple[Path, Path | None]:
    """(HF folder, DeepSpeed state folder or None) of a local checkpoint or model folder."""
    hf = local / "hf" if (local / "hf" / "config.json").exists() else local
    if not (hf / "config.json").exists():
        raise FileNotFoundError(f"no HF model (config.json) in checkpoint {local}")
    state = local / "ds"
    return hf, state if state.is_dir() else None


def local_checkpoint(storage: Storage, uri: str) -> Path:
    """A local folder for the policy at `uri` (downloaded once from object storage)."""
    if read_manifest(storage, uri) is not None:
        return materialize(storage, uri)
    path = Path(uri)
    if (path / "config.json").exists() or (path / "hf" / "config.json").exists():
        return path  # a plain local model folder, e.g. the user's own model
    raise FileNotFoundError(f"no committed checkpoint and no model folder at {uri}")


def local_policy(storage: Storage, uri: str) -> Path:
    """The HF model folder of the policy at `uri`."""
    return checkpoint_parts(local_checkpoint(storage, uri))[0]
