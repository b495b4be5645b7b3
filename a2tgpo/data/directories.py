"""Folder stages (model checkpoints, tokenizers): commit a local folder, get one back.

Layout: the files of a folder go under an attempt-unique subfolder, then the manifest:

    {stage_uri}/{attempt}/config.json, model.safetensors, ...
    {stage_uri}/manifest.json      <- written last, once; `content_root` = "{attempt}"

Concurrent writers each upload a whole copy and race on the manifest (see
`a2tgpo.data.commit`), so a committed folder is always one writer's complete copy.
HF transformers and vLLM need local paths: `materialize` returns the committed folder
itself for a local store and a download in a local cache for S3; either way every file is
checked against the manifest's sizes and sha256 (and no file may be added), because the
folder is loaded as model weights and optimizer state.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from a2tgpo.data.commit import commit, discard, new_attempt_id, read_manifest, require_manifest
from a2tgpo.data.errors import StageMismatch
from a2tgpo.data.manifest import (
    Manifest,
    ManifestFile,
    check_stats,
    code_version,
    content_hash,
    git_sha,
    now,
)
from a2tgpo.data.storage import Storage

log = logging.getLogger(__name__)

CACHE_ENV = "A2TGPO_CACHE"  # shared with the other local caches (BM25 indexes)
_COMPLETE = ".a2tgpo-complete"  # marker in a materialized folder, written after every file
_VERIFIED: dict[str, tuple] = {}  # folder -> (content hash, file stats) when last verified


def commit_directory(
    storage: Storage,
    local_dir: str | os.PathLike[str],
    uri: str,
    *,
    policy_version: int | None = None,
    parents: Sequence[str] = (),
    stats: dict[str, Any] | None = None,
) -> Manifest:
    """Copy every file under `local_dir` to the stage `uri`, then commit; return the
    manifest (the existing one, untouched, when the stage is already committed)."""
    source = Path(local_dir)
    if not source.is_dir():
        raise NotADirectoryError(f"{source} is not a folder")
    stats = check_stats(stats)
    existing = read_manifest(storage, uri)
    if existing is not None:
        _check_directory(existing, uri)
        log.info("stage %s is already committed; returning its manifest", uri)
        return existing
    attempt = new_attempt_id()
    try:
        files = [_upload(storage, uri, attempt, path, source) for path in _files(source)]
    except BaseException as error:
        discard(storage, uri, [attempt])
        rival = read_manifest(storage, uri) if isinstance(error, OSError) else None
        if rival is None:
            raise
        # A rival committed first, and its sweep removed our folder mid-upload.
        return rival
    manifest = Manifest(
        kind="directory",
        uri=uri,
        content_hash=content_hash(files, [f.path.removeprefix(attempt + "/") for f in files]),
        code_version=code_version(),
        git_sha=git_sha(),
        policy_version=policy_version,
        parents=list(parents),
        created_at=now(),
        stats=stats,
        files=files,
        content_root=attempt,
        attempt=attempt,
    )
    return commit(storage, uri, manifest, own_entries=[attempt])


def materialize(
    storage: Storage, uri: str, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """A local folder holding the committed folder stage at `uri` (NotCommitted if none).

    Local store: the committed folder itself. S3: `{cache_dir}/{content_hash}`,
    downloaded once, sha256-checked, and renamed into place whole so concurrent
    callers and crashes never leave a half folder behind. `cache_dir` defaults to
    $A2TGPO_CACHE/stages, else ~/.cache/a2tgpo/stages. The folder returned matches the
    manifest file for file (StageMismatch naming the file otherwise).
    """
    manifest = require_manifest(storage, uri)
    _check_directory(manifest, uri)
    if storage.is_local:
        folder = Path(storage.path(storage.join(uri, manifest.content_root)))
        return verify_folder(folder, manifest, uri)
    cache = Path(cache_dir) if cache_dir else _default_cache()
    target = cache / manifest.content_hash[:32]
    if (target / _COMPLETE).exists():
        return verify_folder(target, manifest, uri)
    staging = cache / f".{target.name}.{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        for f in manifest.files:
            _download(storage, uri, manifest.content_root, f, staging)
        (staging / _COMPLETE).write_text(manifest.uri + "\n")
        try:
            staging.rename(target)
        except OSError:  # another process put the same content there first
            if not (target / _COMPLETE).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def local_cache_dir(*parts: str) -> Path:
    """A local folder for caches (materialized stages, BM25 indexes): $A2TGPO_CACHE, else
    ~/.cache/a2tgpo; created on first use."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "a2tgpo").joinpath(*parts)
    root.mkdir(parents=True, exist_ok=True)
    return root


def _default_cache() -> Path:
    return local_cache_dir("stages")


def _files(source: Path) -> list[Path]:
    return sorted(p for p in source.rglob("*") if p.is_file())


def _upload(storage: Storage, uri: str, attempt: str, path: Path, source: Path) -> ManifestFile:
    relative = path.relative_to(source).as_posix()
    storage.upload(str(path), storage.join(uri, attempt, relative))
    return ManifestFile(
        path=f"{attempt}/{relative}", size=path.stat().st_size, sha256=_sha256_file(path)
    )


def _download(storage: Storage, uri: str, root: str, f: ManifestFile, staging: Path) -> None:
    relative = f.path.removeprefix(root + "/")
    local = staging / relative
    local.parent.mkdir(parents=True, exist_ok=True)
    storage.download(storage.join(uri, f.path), str(local))
    if local.stat().st_size != f.size or _sha256_file(local) != f.sha256:
        raise OSError(f"downloaded {uri}/{f.path} does not match its manifest entry")


def verify_folder(folder: Path, manifest: Manifest, uri: str) -> Path:
    """`folder` if it holds exactly the manifest's files with their sizes and sha256.

    Hashing is skipped when no file's stat (size, mtime, ctime, inode) changed since
    this process last verified the folder against the same manifest: any write, even one
    that restores the mtime, moves the ctime."""
    expected = {f.path.removeprefix(manifest.content_root + "/"): f for f in manifest.files}
    found = {
        p.relative_to(folder).as_posix(): p
        for p in folder.rglob("*")
        if p.is_file() and p.name != _COMPLETE
    }
    if extra := sorted(found.keys() - expected.keys()):
        raise StageMismatch(f"{uri}: file {extra[0]} is not in its manifest (added after commit)")
    if missing := sorted(expected.keys() - found.keys()):
        raise StageMismatch(f"{uri}: file {missing[0]} of its manifest is missing")
    signature = (manifest.content_hash, _stat_signature(found))
    if _VERIFIED.get(str(folder)) == signature:
        return folder
    for relative, entry in sorted(expected.items()):
        path = found[relative]
        if path.stat().st_size != entry.size or _sha256_file(path) != entry.sha256:
            raise StageMismatch(
                f"{uri}: file {relative} does not match its manifest (size or sha256): "
                "changed after commit"
            )
    _VERIFIED[str(folder)] = signature
    return folder


def _stat_signature(files: dict[str, Path]) -> tuple:
    stats = {relative: path.stat() for relative, path in files.items()}
    return tuple(
        (r, s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino) for r, s in sorted(stats.items())
    )


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _check_directory(manifest: Manifest, uri: str) -> None:
    if manifest.kind != "directory":
        raise StageMismatch(f"stage {uri} holds a {manifest.kind}, not a folder")
