"""Folder stages (checkpoints): commit a local folder, materialize it back locally."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from a2tgpo.data.directories import commit_directory, materialize
from a2tgpo.data.errors import NotCommitted, StageMismatch
from a2tgpo.data.fakes import fake_prompts
from a2tgpo.data.stage import is_committed, read_manifest, write_stage
from a2tgpo.data.storage import Storage


def make_checkpoint(folder: Path, tag: str) -> dict[str, bytes]:
    """A small HF-like checkpoint folder; returns its files by relative path."""
    files = {
        "config.json": f'{{"tag": "{tag}"}}'.encode(),
        "model.safetensors": os.urandom(300_000) + tag.encode(),
        "tokenizer/tokenizer.json": f"tokenizer {tag}".encode(),
    }
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return files


def read_folder(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".a2tgpo")
    }


def test_commit_and_materialize_a_folder(storage_config, tmp_path):
    storage = Storage(storage_config)
    files = make_checkpoint(tmp_path / "ckpt", "a")
    uri = storage.stage_uri("run", 4, "checkpoint")
    assert not is_committed(storage, uri)
    with pytest.raises(NotCommitted):
        materialize(storage, uri, cache_dir=tmp_path / "cache")

    manifest = commit_directory(
        storage, tmp_path / "ckpt", uri, policy_version=5, parents=["s3://x/advantages"]
    )

    assert (manifest.kind, manifest.policy_version, manifest.parents) == (
        "directory",
        5,
        ["s3://x/advantages"],
    )
    assert sorted(
        f.path.removeprefix(manifest.content_root + "/") for f in manifest.files
    ) == sorted(files)
    assert storage.list(uri) == sorted([manifest.content_root, "manifest.json"])
    local = materialize(storage, uri, cache_dir=tmp_path / "cache")
    assert read_folder(local) == files
    assert materialize(storage, uri, cache_dir=tmp_path / "cache") == local  # cached
    again = commit_directory(storage, tmp_path / "ckpt", uri)
    assert again == manifest


def test_materialize_downloads_once(storage_config, tmp_path, monkeypatch):
    storage = Storage(storage_config)
    make_checkpoint(tmp_path / "ckpt", "b")
    uri = storage.join("ckpt")
    commit_directory(storage, tmp_path / "ckpt", uri)
    first = materialize(storage, uri, cache_dir=tmp_path / "cache")
    monkeypatch.setattr(Storage, "download", lambda *a: pytest.fail("downloaded twice"))
    assert materialize(storage, uri, cache_dir=tmp_path / "cache") == first


def test_failed_upload_commits_nothing(storage_config, tmp_path, monkeypatch):
    storage = Storage(storage_config)
    make_checkpoint(tmp_path / "ckpt", "c")
    uri = storage.join("ckpt")
    real_upload, calls = Storage.upload, []

    def flaky(self, local, target):
        calls.append(local)
        if len(calls) == 2:
            raise ConnectionError("network down")
        real_upload(self, local, target)

    monkeypatch.setattr(Storage, "upload", flaky)
    with pytest.raises(ConnectionError):
        commit_directory(storage, tmp_path / "ckpt", uri)
    assert not is_committed(storage, uri) and storage.list(uri) == []


def test_concurrent_folder_commits_keep_one_whole_copy(storage_config, tmp_path):
    storage = Storage(storage_config)
    uri = storage.join("ckpt")
    writers = 3
    sources = {}
    for i in range(writers):
        sources[i] = make_checkpoint(tmp_path / f"w{i}", f"writer-{i}")
    barrier = threading.Barrier(writers)
    real_upload = storage.upload

    def upload_then_wait(local, target, seen=threading.local()):
        real_upload(local, target)
        seen.count = getattr(seen, "count", 0) + 1
        if seen.count == 3:  # every writer has uploaded its whole copy
            barrier.wait(timeout=30)

    storage.upload = upload_then_wait  # type: ignore[method-assign]
    with ThreadPoolExecutor(writers) as pool:
        manifests = list(
            pool.map(lambda i: commit_directory(storage, tmp_path / f"w{i}", uri), range(writers))
        )

    assert len({m.attempt for m in manifests}) == 1
    assert storage.list(uri) == sorted([manifests[0].content_root, "manifest.json"])
    local = materialize(storage, uri, cache_dir=tmp_path / "cache")
    assert sum(read_folder(local) == files for files in sources.values()) == 1


def test_folder_and_dataset_stages_are_not_confused(storage_config, tmp_path):
    storage = Storage(storage_config)
    write_stage(storage, storage.join("prompts"), fake_prompts(3), "prompts")
    with pytest.raises(StageMismatch):
        materialize(storage, storage.join("prompts"), cache_dir=tmp_path)
    make_checkpoint(tmp_path / "ckpt", "d")
    commit_directory(storage, tmp_path / "ckpt", storage.join("ckpt"))
    assert read_manifest(storage, storage.join("ckpt")).kind == "directory"
    with pytest.raises(StageMismatch):
        write_stage(storage, storage.join("ckpt"), fake_prompts(3), "prompts")


def test_same_bytes_under_other_names_is_other_content(storage_config, tmp_path):
    storage = Storage(storage_config)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.bin").write_bytes(b"same bytes")
        commit_directory(storage, tmp_path / name, storage.join(name))
    hashes = {read_manifest(storage, storage.join(n)).content_hash for n in ("a", "b")}
    assert len(hashes) == 2
    for name in ("a", "b"):
        local = materialize(storage, storage.join(name), cache_dir=tmp_path / "cache")
        assert read_folder(local) == {f"{name}.bin": b"same bytes"}


def test_a_tampered_file_is_refused_on_every_store(storage_config, tmp_path):
    """A byte changed after the commit (in the committed folder of a local store, in the
    download cache of S3) is caught against the manifest's sha256, naming the file."""
    storage = Storage(storage_config)
    make_checkpoint(tmp_path / "ckpt", "e")
    uri = storage.join("ckpt")
    commit_directory(storage, tmp_path / "ckpt", uri)
    local = materialize(storage, uri, cache_dir=tmp_path / "cache")
    weights = local / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[1000] ^= 0xFF  # same size: only the hash can tell
    weights.write_bytes(bytes(data))
    with pytest.raises(StageMismatch, match=r"model\.safetensors.*sha256"):
        materialize(storage, uri, cache_dir=tmp_path / "cache")


def test_a_file_added_after_the_commit_is_refused(storage_config, tmp_path):
    storage = Storage(storage_config)
    make_checkpoint(tmp_path / "ckpt", "f")
    uri = storage.join("ckpt")
    commit_directory(storage, tmp_path / "ckpt", uri)
    local = materialize(storage, uri, cache_dir=tmp_path / "cache")
    (local / "tokenizer" / "extra.pt").write_bytes(b"not in the manifest")
    with pytest.raises(StageMismatch, match=r"tokenizer/extra\.pt.*not in its manifest"):
        materialize(storage, uri, cache_dir=tmp_path / "cache")
