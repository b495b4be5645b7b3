"""Checkpoints are data, never code: a changed byte is caught against the manifest, and a
pickle in a checkpoint is refused without ever being opened (issue 13, item 1)."""

from __future__ import annotations

import pickle
import re
import shutil
from pathlib import Path

import pytest

from a2tgpo.config import RunConfig
from a2tgpo.data.checkpoints import UnsafeCheckpoint, local_policy
from a2tgpo.data.directories import commit_directory, materialize
from a2tgpo.data.errors import StageMismatch
from a2tgpo.data.fakes import fake_trajectories
from a2tgpo.data.stage import write_stage
from a2tgpo.data.storage import Storage
from a2tgpo.stages.train_step import run_train_step


class Payload:
    """Unpickling this creates `marker`: the evidence that a pickle was opened."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def store(tmp_path) -> tuple[RunConfig, Storage]:
    config = RunConfig(storage={"root": str(tmp_path / "store")}, model={"dtype": "float32"})
    return config, Storage(config.storage)


def advantaged(config: RunConfig, storage: Storage) -> str:
    uri = storage.join("run", "adv")
    table = fake_trajectories(4, tokens=64, turns=2, schema_name="advantaged", vocab=64, seed=1)
    write_stage(storage, uri, table, "advantaged", policy_version=0)
    return uri


def checkpoint_folder(tiny_model_dir: Path, folder: Path) -> Path:
    shutil.copytree(tiny_model_dir, folder / "hf")
    return folder


def plant_pickle(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(Payload(marker)))


def train(config, storage, policy_uri):
    return run_train_step(
        config,
        advantaged_uri=advantaged(config, storage),
        policy_uri=policy_uri,
        out_uri=storage.join("run", "next"),
        policy_version=1,
    )


def test_a_changed_byte_in_a_local_checkpoint_is_refused(store, tiny_model_dir, tmp_path):
    config, storage = store
    uri = storage.join("run", "ckpt")
    commit_directory(storage, checkpoint_folder(tiny_model_dir, tmp_path / "ckpt"), uri)
    weights = materialize(storage, uri) / "hf" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(StageMismatch, match=r"hf/model\.safetensors does not match"):
        local_policy(storage, uri)
    with pytest.raises(StageMismatch, match=r"hf/model\.safetensors does not match"):
        train(config, storage, uri)


@pytest.mark.parametrize(
    "name",
    ["ds/state/zero_pp_rank_0_mp_rank_00_model_states.pt", "optim/optimizer.bin", "hf/x.pkl"],
)
def test_a_pickle_dropped_into_a_committed_checkpoint_is_never_opened(
    store, tiny_model_dir, tmp_path, name
):
    config, storage = store
    uri = storage.join("run", "ckpt")
    commit_directory(storage, checkpoint_folder(tiny_model_dir, tmp_path / "ckpt"), uri)
    marker = tmp_path / "payload-ran"
    plant_pickle(materialize(storage, uri) / name, marker)
    with pytest.raises(StageMismatch, match="not in its manifest"):
        train(config, storage, uri)
    assert not marker.exists()


@pytest.mark.parametrize(
    "name",
    [
        "ds/state/zero_pp_rank_0_mp_rank_00_model_states.pt",  # DeepSpeed's own state
        "optim/optimizer.bin",
        "hf/pytorch_model.bin",
    ],
)
def test_a_committed_pickle_is_refused_even_with_a_matching_manifest(
    store, tiny_model_dir, tmp_path, name
):
    """Whoever can write the bucket can rewrite the manifest too: the pickle is refused
    by name, whatever the manifest says, and nothing opens it."""
    config, storage = store
    marker = tmp_path / "payload-ran"
    folder = checkpoint_folder(tiny_model_dir, tmp_path / "ckpt")
    plant_pickle(folder / name, marker)
    if name.startswith("ds/"):
        (folder / "ds" / "latest").write_text("state")
    uri = storage.join("run", "ckpt")
    commit_directory(storage, folder, uri)
    with pytest.raises(Exception) as refused:
        train(config, storage, uri)
    assert not marker.exists(), "the pickle was opened: its payload ran"
    assert isinstance(refused.value, UnsafeCheckpoint), refused.value
    assert re.search(rf"{name}.*never unpickles", str(refused.value)), refused.value
    with pytest.raises(UnsafeCheckpoint):
        local_policy(storage, uri)
    assert not marker.exists()
