"""The commit protocol shared by dataset stages and directory stages.

A stage folder holds files written by writer *attempts* under attempt-unique names,
and at most one `manifest.json`, created atomically if absent, last. So:

- readers trust only the manifest: no manifest = not committed (`NotCommitted`);
  files a manifest does not list are invisible, whatever they are;
- of concurrent writers, the one whose create-if-absent succeeds wins; the others
  delete their own files and return the winner's manifest;
- the winner then sweeps every entry the manifest does not list (files of crashed
  attempts, temporary files). A live concurrent writer whose files it sweeps finds
  the manifest when it tries to commit, and cleans up after itself.

Nothing is deleted *before* a commit: a writer cannot tell a crashed attempt's files
from those of one still running, so cleaning up front could break a live writer.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable

from a2tgpo.data.errors import NotCommitted
from a2tgpo.data.manifest import MANIFEST_NAME, Manifest
from a2tgpo.data.storage import Storage
from a2tgpo.faults import failpoint, uri_tail

log = logging.getLogger(__name__)


def new_attempt_id() -> str:
    return uuid.uuid4().hex[:12]


def manifest_uri(storage: Storage, uri: str) -> str:
    return storage.join(uri, MANIFEST_NAME)


def read_manifest(storage: Storage, uri: str) -> Manifest | None:
    """The stage's manifest, or None when the stage is not committed."""
    try:
        data = storage.read_bytes(manifest_uri(storage, uri))
    except FileNotFoundError:
        return None
    return Manifest.from_json(data)


def require_manifest(storage: Storage, uri: str) -> Manifest:
    """The stage's manifest; NotCommitted when there is none."""
    manifest = read_manifest(storage, uri)
    if manifest is None:
        raise NotCommitted(uri)
    return manifest


def is_committed(storage: Storage, uri: str) -> bool:
    return storage.exists(manifest_uri(storage, uri))


def commit(storage: Storage, uri: str, manifest: Manifest, own_entries: Iterable[str]) -> Manifest:
    """Create the manifest if absent; return the committed one (ours or a rival's).

    `own_entries` are this attempt's top-level names in the stage folder (part files,
    or the attempt's content folder): a loser removes them, a winner keeps them and
    sweeps all other entries.
    """
    own = set(own_entries)
    failpoint(f"before-commit:{uri_tail(uri)}")
    if storage.put_if_absent(manifest_uri(storage, uri), manifest.to_json()):
        log.info("committed %s (%d files, attempt %s)", uri, len(manifest.files), manifest.attempt)
        sweep(storage, uri, keep=own | {MANIFEST_NAME})
        return manifest
    log.info("stage %s was committed by another writer; dropping attempt %s", uri, manifest.attempt)
    discard(storage, uri, own)
    return require_manifest(storage, uri)


def sweep(storage: Storage, uri: str, keep: set[str]) -> None:
    """Delete every top-level entry of the stage folder not in `keep` (best effort)."""
    stale = [name for name in storage.list(uri) if name not in keep]
    if stale:
        log.info("removing %d stale entries from %s", len(stale), uri)
    discard(storage, uri, stale)


def discard(storage: Storage, uri: str, names: Iterable[str]) -> None:
    """Delete entries of the stage folder; failures are logged, not raised, since the
    entries are invisible to readers anyway and the next commit sweeps them."""
    for name in names:
        try:
            storage.remove(storage.join(uri, name), recursive=True)
        except OSError as e:
            log.warning("could not remove %s/%s: %s", uri, name, type(e).__name__)
