"""Write and read stage datasets: validated Parquet parts, then a manifest.

Layout of a dataset stage (`Storage.stage_uri`):

    {root}/{run_id}/iter={k:05d}/{stage}/part-{attempt}-{n:05d}.parquet
    {root}/{run_id}/iter={k:05d}/{stage}/manifest.json      <- written last, once

`write_stage` streams record batches through the `Validator`, cuts them into parts of
`rows_per_part` rows, encodes and uploads up to two parts at a time, and commits
(`a2tgpo.data.commit`). `read_stage` / `iter_stage_batches` read exactly the parts
the manifest lists through the *current* canonical schema, so a nullable column
added after the data was written reads as nulls.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from a2tgpo.data.commit import (
    commit,
    discard,
    is_committed,
    new_attempt_id,
    read_manifest,
    require_manifest,
)
from a2tgpo.data.errors import DatasetValidationError, StageMismatch
from a2tgpo.data.manifest import (
    Manifest,
    ManifestFile,
    check_stats,
    code_version,
    content_hash,
    git_sha,
    now,
)
from a2tgpo.data.schemas import SCHEMA_VERSION, schema_for
from a2tgpo.data.storage import Storage
from a2tgpo.data.validate import Validator

log = logging.getLogger(__name__)

__all__ = [
    "is_committed",
    "iter_stage_batches",
    "read_manifest",
    "read_stage",
    "resumable",
    "write_stage",
]

TableLike = pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch | pa.Table]

# zstd without dictionaries on the big numeric lists: about as small as dictionary
# encoding of token ids (-7%) at half the encode and a quarter of the decode time.
COMPRESSION = "zstd"
PARTS_IN_FLIGHT = 2  # parts encoded / uploaded concurrently (each ~75 MB at 4096 x 2k)


def resumable(stage_fn: Callable[..., Manifest]) -> Callable[..., Manifest]:
    """The rule of resume, for a stage function `fn(config, *, out_uri, ...)`: when its
    output is already committed, return that manifest and compute nothing."""

    @functools.wraps(stage_fn)
    def run(config, *args: Any, out_uri: str, **kwargs: Any) -> Manifest:
        existing = read_manifest(Storage(config.storage), out_uri)
        if existing is not None:
            log.info("%s: %s is already committed; nothing to do", stage_fn.__name__, out_uri)
            return existing
        return stage_fn(config, *args, out_uri=out_uri, **kwargs)

    return run


def write_stage(
    storage: Storage,
    uri: str,
    data: TableLike,
    schema_name: str,
    *,
    policy_version: int | None = None,
    parents: Sequence[str] = (),
    stats: dict[str, Any] | None = None,
    rows_per_part: int | None = None,
) -> Manifest:
    """Validate and commit a dataset at `uri`; return its manifest.

    `data` is a table, a batch, or an iterable of them (a generator streams a dataset
    larger than memory). A stage that is already committed is left alone and its
    manifest returned. If another writer commits the stage first, this call drops
    its own parts and returns the winner's manifest. On any error the parts written
    so far are removed and nothing is committed.
    """
    schema = schema_for(schema_name)
    stats = check_stats(stats)
    existing = read_manifest(storage, uri)
    if existing is not None:
        _check_kind(existing, uri, schema_name)
        log.info("stage %s is already committed; returning its manifest", uri)
        return existing
    attempt = new_attempt_id()
    storage.makedirs(uri)
    writer = _PartWriter(storage, uri, attempt, schema)
    try:
        validated = map(Validator(schema), _batches(data))
        for table in _rechunk(validated, schema, rows_per_part or storage.config.rows_per_part):
            if is_committed(storage, uri):
                break  # a rival won: stop producing, let commit() clean up
            writer.submit(table)
        files = writer.finish()
    except BaseException:
        writer.abort()
        raise
    manifest = Manifest(
        kind="dataset",
        uri=uri,
        schema_name=schema_name,
        schema_version=SCHEMA_VERSION,
        num_rows=sum(f.rows or 0 for f in files),
        content_hash=content_hash(files),
        code_version=code_version(),
        git_sha=git_sha(),
        policy_version=policy_version,
        parents=list(parents),
        created_at=now(),
        stats=stats,
        files=files,
        attempt=attempt,
    )
    return commit(storage, uri, manifest, own_entries=writer.names)


def read_stage(
    storage: Storage,
    uri: str,
    schema_name: str | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """The committed dataset at `uri` in its canonical schema (NotCommitted if none)."""
    dataset, schema = _open(storage, uri, schema_name)
    table = dataset.to_table(columns=list(columns) if columns else None)
    _check_required(table, schema)
    return table


def iter_stage_batches(
    storage: Storage,
    uri: str,
    schema_name: str | None = None,
    columns: Sequence[str] | None = None,
    batch_size: int = 4096,
) -> Iterator[pa.RecordBatch]:
    """The committed dataset at `uri` as a stream of record batches, in part order.

    NotCommitted is raised by this call, not at the first batch."""
    dataset, schema = _open(storage, uri, schema_name)
    batches = dataset.to_batches(columns=list(columns) if columns else None, batch_size=batch_size)
    return _checked(batches, schema)


def _checked(batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        _check_required(batch, schema)
        yield batch


def _open(storage: Storage, uri: str, schema_name: str | None) -> tuple[ds.Dataset, pa.Schema]:
    manifest = require_manifest(storage, uri)
    _check_kind(manifest, uri, schema_name or manifest.schema_name)
    if (manifest.schema_version or 0) > SCHEMA_VERSION:
        raise StageMismatch(
            f"stage {uri} was written with schema version {manifest.schema_version}; "
            f"this code knows version {SCHEMA_VERSION}"
        )
    schema = schema_for(manifest.schema_name or "")
    fmt = ds.ParquetFileFormat()
    fs = storage.bulk_fs
    # Fragments from the manifest (sizes included): no listing, no HEAD per part.
    fragments = [
        fmt.make_fragment(storage.path(storage.join(uri, f.path)), filesystem=fs, file_size=f.size)
        for f in manifest.files
    ]
    return ds.FileSystemDataset(fragments, schema=schema, format=fmt, filesystem=fs), schema


def _check_kind(manifest: Manifest, uri: str, schema_name: str | None) -> None:
    if manifest.kind != "dataset":
        raise StageMismatch(f"stage {uri} holds a {manifest.kind}, not a dataset")
    if schema_name is not None and manifest.schema_name != schema_name:
        raise StageMismatch(
            f"stage {uri} holds a {manifest.schema_name!r} dataset, not {schema_name!r}"
        )


def _check_required(data: pa.Table | pa.RecordBatch, schema: pa.Schema) -> None:
    # Old data missing a column reads as nulls; fine only where the schema allows nulls.
    for name in data.schema.names:
        if not schema.field(name).nullable and data.column(name).null_count:
            raise DatasetValidationError(
                name, "nulls in a non-nullable column (missing from this stage's data?)"
            )


def _batches(data: TableLike) -> Iterator[pa.RecordBatch]:
    if isinstance(data, pa.RecordBatch | pa.Table):
        data = [data]
    for item in data:
        if isinstance(item, pa.Table):
            yield from item.to_batches()
        elif isinstance(item, pa.RecordBatch):
            yield item
        else:
            raise TypeError(f"expected pyarrow Tables or RecordBatches, got {type(item).__name__}")


def _rechunk(batches: Iterable[pa.RecordBatch], schema: pa.Schema, rows: int) -> Iterator[pa.Table]:
    """Tables of exactly `rows` rows (the last one may be shorter)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        while batch.num_rows:
            take = min(rows - count, batch.num_rows)
            pending.append(batch.slice(0, take))
            count += take
            batch = batch.slice(take)
            if count == rows:
                yield pa.Table.from_batches(pending, schema)
                pending, count = [], 0
    if count:
        yield pa.Table.from_batches(pending, schema)


class _PartWriter:
    """Encodes and uploads parts on a small thread pool (pyarrow, hashlib and the
    network all release the GIL), keeping at most PARTS_IN_FLIGHT parts in memory."""

    def __init__(self, storage: Storage, uri: str, attempt: str, schema: pa.Schema) -> None:
        self.storage, self.uri, self.attempt = storage, uri, attempt
        self.names: list[str] = []
        self._dictionary = [f.name for f in schema if pa.types.is_string(f.type)]
        self._pool = ThreadPoolExecutor(PARTS_IN_FLIGHT, thread_name_prefix="a2tgpo-part")
        self._pending: deque[Future[ManifestFile]] = deque()
        self._done: list[ManifestFile] = []

    def submit(self, table: pa.Table) -> None:
        name = f"part-{self.attempt}-{len(self.names):05d}.parquet"
        self.names.append(name)
        self._pending.append(self._pool.submit(self._write, name, table))
        while len(self._pending) > PARTS_IN_FLIGHT:
            self._done.append(self._pending.popleft().result())

    def finish(self) -> list[ManifestFile]:
        while self._pending:
            self._done.append(self._pending.popleft().result())
        self._pool.shutdown()
        return self._done

    def abort(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        discard(self.storage, self.uri, self.names)

    def _write(self, name: str, table: pa.Table) -> ManifestFile:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression=COMPRESSION, use_dictionary=self._dictionary)
        data = sink.getvalue()
        path = self.storage.path(self.storage.join(self.uri, name))
        with self.storage.bulk_fs.open_output_stream(path) as out:
            out.write(data)
        return ManifestFile(
            path=name, size=data.size, sha256=hashlib.sha256(data).hexdigest(), rows=table.num_rows
        )
