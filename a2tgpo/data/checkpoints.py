"""Where a policy lives, and how a stage gets it as a local HF folder.

A policy is named by a URI: a committed checkpoint folder in storage (`hf/` holding
the HF model and, after an RL step, `optim/` holding the optimizer state as
safetensors + JSON, `a2tgpo.training.optimizer_state`), a plain local HF folder (a
user's model), or a Hugging Face hub id (`owner/name`: its safetensors snapshot is
downloaded once into the HF cache, as in a cluster; nothing can be downloaded here). A LoRA step's checkpoint holds `adapter/` (peft's
folder, whose config names the frozen base policy's URI) instead of `hf/`, or beside a
merged `hf/` (`train.export_merged`); `policy_files` resolves it to base + adapter.

A committed checkpoint is data that storage could have changed, so it is never
unpickled: `materialize` checks every file against the manifest, and a checkpoint
holding a pickle (`*.pt`, `*.bin`, ...; DeepSpeed's own `ds/` state of older versions)
is refused before anything opens it, whatever its manifest says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from a2tgpo.data.directories import materialize
from a2tgpo.data.errors import StageMismatch
from a2tgpo.data.stage import read_manifest
from a2tgpo.data.storage import Storage
from a2tgpo.engines.adapters import ADAPTER_CONFIG, AdapterError, adapter_base

MARKERS = ("config.json", ADAPTER_CONFIG)  # what makes a folder a model or an adapter
# A hub model id, `owner/name` (a path that does not exist locally is read as one).
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
HUB_FILES = ("*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken")
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")
STATE_DIR = "optim"
ADAPTER_DIR = "adapter"


class UnsafeCheckpoint(StageMismatch):
    """A committed checkpoint holds a file that only unpickling could read."""


def checkpoint_parts(local: Path) -> tuple[Path, Path | None]:
    """(HF folder, optimizer state folder or None) of a local checkpoint or model folder."""
    hf = local / "hf" if (local / "hf" / "config.json").exists() else local
    if not (hf / "config.json").exists():
        lora = " (it is a LoRA checkpoint: policy_files reads it)"
        raise FileNotFoundError(
            f"no HF model (config.json) in checkpoint {local}"
            + (lora if is_adapter_checkpoint(local) else "")
        )
    state = local / STATE_DIR
    return hf, state if state.is_dir() else None


def refuse_pickles(folder: Path, uri: str) -> None:
    """UnsafeCheckpoint naming the first pickle file under `folder` (none is opened)."""
    pickles = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES
    )
    if pickles:
        raise UnsafeCheckpoint(
            f"checkpoint {uri} holds {pickles[0]} ({len(pickles)} pickle file(s)): a2tgpo never "
            "unpickles a checkpoint (weights and optimizer state are safetensors); one written "
            "by a version before this rule (DeepSpeed's ds/ state) cannot be resumed: start "
            "a new run_id"
        )


def local_checkpoint(storage: Storage, uri: str) -> Path:
    """A local folder for the policy at `uri` (downloaded once from object storage);
    a committed one is verified against its manifest and holds no pickle."""
    if read_manifest(storage, uri) is not None:
        local = materialize(storage, uri)
        refuse_pickles(local, uri)
        return local
    path = Path(uri)
    if any((path / sub / name).exists() for sub in ("", "hf", ADAPTER_DIR) for name in MARKERS):
        return path  # a plain local model folder, e.g. the user's own model
    if HUB_ID.match(uri) and not path.exists():
        return hub_snapshot(uri)
    raise FileNotFoundError(f"no committed checkpoint and no model folder at {uri}")


def hub_snapshot(repo_id: str) -> Path:
    """The local snapshot of a Hugging Face hub model (downloaded once into the HF cache,
    $HF_HUB_CACHE; offline with HF_HUB_OFFLINE=1): its weights as safetensors, configs
    and tokenizer, never a pickle."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(HUB_FILES)))
    except Exception as error:  # offline, unknown repo, gated, no network: say which
        raise FileNotFoundError(
            f"{repo_id} is not a committed checkpoint or a local model folder, and the "
            f"Hugging Face hub could not provide it ({type(error).__name__}: {error})"
        ) from None


def local_policy(storage: Storage, uri: str) -> Path:
    """The HF model folder of the policy at `uri`."""
    return checkpoint_parts(local_checkpoint(storage, uri))[0]


@dataclass(frozen=True)
class PolicyFiles:
    """A policy as local folders: an HF model, or a frozen base HF model plus an adapter."""

    model_dir: Path  # the policy's HF folder, or the base of `adapter_dir`
    adapter_dir: Path | None = None  # peft's LoRA folder, applied on `model_dir`
    state_dir: Path | None = None  # the optimizer state of the step that wrote the policy
    base_uri: str | None = None  # the URI of `model_dir` when it is an adapter's base


def adapter_folder(local: Path) -> Path | None:
    """The LoRA adapter of a checkpoint (`adapter/`), or of a bare peft folder (a user's
    adapter: `adapter_config.json` at the top), or None."""
    for folder in (local / ADAPTER_DIR, local):
        if (folder / ADAPTER_CONFIG).is_file():
            return folder
    return None


def is_adapter_checkpoint(local: Path) -> bool:
    return adapter_folder(local) is not None


def policy_files(storage: Storage, uri: str) -> PolicyFiles:
    """The local folders of the policy at `uri`; an adapter's base is resolved (and
    downloaded) from the URI its adapter config names."""
    local = local_checkpoint(storage, uri)
    state = local / STATE_DIR if (local / STATE_DIR).is_dir() else None
    adapter = adapter_folder(local)
    if adapter is None:
        return PolicyFiles(checkpoint_parts(local)[0], None, state)
    base_uri = adapter_base(adapter)
    base = policy_files(storage, base_uri)
    if base.adapter_dir is not None:
        raise AdapterError(
            f"the adapter of {uri} names {base_uri} as its base, which is itself an adapter "
            "checkpoint: adapters do not stack (the base must be a full model)"
        )
    return PolicyFiles(base.model_dir, adapter, state, base_uri)


def adapter_path(policy: PolicyFiles) -> str | None:
    return str(policy.adapter_dir) if policy.adapter_dir else None
