"""Stage datasets on a local folder and on S3 (moto): layout, round trips, commits,
lineage, schema evolution."""

from __future__ import annotations

import hashlib
import re

import pyarrow as pa
import pytest

import a2tgpo
from a2tgpo.data import schemas
from a2tgpo.data.errors import DatasetValidationError, NotCommitted, StageMismatch
from a2tgpo.data.fakes import fake_prompts, fake_trajectories
from a2tgpo.data.stage import (
    is_committed,
    iter_stage_batches,
    read_manifest,
    read_stage,
    write_stage,
)
from a2tgpo.data.storage import Storage


def sample(name: str, rows: int = 30, seed: int = 0) -> pa.Table:
    if name == "prompts":
        return fake_prompts(rows)
    return fake_trajectories(rows, tokens=64, turns=3, schema_name=name, batch_rows=7, seed=seed)


@pytest.mark.parametrize("name", sorted(schemas.SCHEMAS))
def test_round_trip_of_each_schema(storage_config, name):
    storage = Storage(storage_config)
    table = sample(name)
    uri = storage.stage_uri("run-1", 3, name)
    assert uri == storage.join("run-1", "iter=00003", name)

    manifest = write_stage(storage, uri, table, name, policy_version=2, rows_per_part=8)

    assert (manifest.num_rows, len(manifest.files)) == (30, 4)
    assert [f.rows for f in manifest.files] == [8, 8, 8, 6]
    for i, f in enumerate(manifest.files):
        assert f.path == f"part-{manifest.attempt}-{i:05d}.parquet"
    assert storage.list(uri) == sorted([f.path for f in manifest.files] + ["manifest.json"])
    assert read_stage(storage, uri).equals(table)
    assert pa.Table.from_batches(list(iter_stage_batches(storage, uri, batch_size=5))).equals(table)
    ids = read_stage(storage, uri, name, columns=["prompt_id"])
    assert ids.column_names == ["prompt_id"] and ids["prompt_id"].equals(table["prompt_id"])


def test_streamed_batches_are_cut_into_parts(storage_config):
    storage = Storage(storage_config.model_copy(update={"rows_per_part": 16}))
    table = sample("trajectories", rows=40)
    manifest = write_stage(storage, storage.join("s"), iter(table.to_batches()), "trajectories")
    assert [f.rows for f in manifest.files] == [16, 16, 8]
    assert read_stage(storage, storage.join("s")).equals(table)


def test_both_bulk_backends_read_each_others_parts(storage_config):
    table = sample("scored")
    arrow, fsspec = Storage(storage_config, bulk="arrow"), Storage(storage_config, bulk="fsspec")
    write_stage(arrow, arrow.join("a"), table, "scored", rows_per_part=10)
    write_stage(fsspec, fsspec.join("f"), table, "scored", rows_per_part=10)
    assert read_stage(fsspec, fsspec.join("a")).equals(table)
    assert read_stage(arrow, arrow.join("f")).equals(table)


def test_empty_dataset(storage_config):
    storage = Storage(storage_config)
    manifest = write_stage(storage, storage.join("empty"), [], "prompts")
    assert (manifest.num_rows, manifest.files) == (0, [])
    empty = read_stage(storage, storage.join("empty"))
    assert empty.num_rows == 0 and empty.schema.equals(schemas.PROMPTS)


def test_uncommitted_stage_is_invisible(storage_config):
    storage = Storage(storage_config)
    uri = storage.stage_uri("run", 0, "rollout")
    assert not is_committed(storage, uri) and read_manifest(storage, uri) is None
    with pytest.raises(NotCommitted, match="not committed"):
        read_stage(storage, uri)
    with pytest.raises(NotCommitted):
        iter_stage_batches(storage, uri)


def test_writing_a_committed_stage_is_a_no_op(storage_config):
    storage = Storage(storage_config)
    uri = storage.stage_uri("run", 1, "rollout")
    first = write_stage(storage, uri, sample("trajectories", seed=1), "trajectories")
    again = write_stage(storage, uri, sample("trajectories", seed=2), "trajectories")
    assert again == first
    assert read_stage(storage, uri).equals(sample("trajectories", seed=1))
    with pytest.raises(StageMismatch):
        write_stage(storage, uri, sample("scored"), "scored")
    with pytest.raises(StageMismatch):
        read_stage(storage, uri, "prompts")


def test_invalid_data_commits_nothing_and_leaves_no_parts(storage_config):
    storage = Storage(storage_config)
    good = sample("trajectories", rows=20)
    rows = good.to_pylist()
    rows[17]["finish_reason"] = "bogus"
    bad = pa.Table.from_pylist(rows, schema=schemas.TRAJECTORIES)
    uri = storage.join("bad")
    with pytest.raises(DatasetValidationError, match=r"'finish_reason', row 17"):
        batches = iter(bad.to_batches(max_chunksize=4))  # rows 0..15 make 4 parts first
        write_stage(storage, uri, batches, "trajectories", rows_per_part=4)
    assert not is_committed(storage, uri)
    assert storage.list(uri) == []


def test_lineage_and_provenance_in_the_manifest(storage_config):
    storage = Storage(storage_config)
    prompts_uri = storage.stage_uri("run", 0, "prompts")
    write_stage(storage, prompts_uri, sample("prompts"), "prompts")
    uri = storage.stage_uri("run", 0, "rollout")
    stats = {"mean_outcome": 0.25, "finish_reasons": {"answer": 30}}
    write_stage(
        storage,
        uri,
        sample("trajectories"),
        "trajectories",
        policy_version=7,
        parents=[prompts_uri],
        stats=stats,
        rows_per_part=16,
    )
    manifest = read_manifest(storage, uri)
    assert manifest is not None
    assert (manifest.schema_name, manifest.schema_version) == ("trajectories", 1)
    assert (manifest.parents, manifest.policy_version, manifest.stats) == ([prompts_uri], 7, stats)
    assert manifest.uri == uri and manifest.created_at.tzinfo is not None
    assert re.fullmatch(
        re.escape(a2tgpo.__version__) + r"(\+g[0-9a-f]{12}(-dirty)?)?", manifest.code_version
    )
    shas = []
    for f in manifest.files:
        data = storage.read_bytes(storage.join(uri, f.path))
        assert (len(data), hashlib.sha256(data).hexdigest()) == (f.size, f.sha256)
        shas.append(f.sha256)
    assert manifest.content_hash == hashlib.sha256("".join(shas).encode()).hexdigest()


def test_stats_must_be_json(storage_config):
    storage = Storage(storage_config)
    with pytest.raises(ValueError, match="JSON"):
        write_stage(storage, storage.join("x"), sample("prompts"), "prompts", stats={"f": object()})


def old_schema(schema: pa.Schema, drop: str, drop_in_turns: str | None = None) -> pa.Schema:
    fields = [f for f in schema if f.name != drop]
    if drop_in_turns:
        turn = schema.field("turns").type.value_type
        kept = pa.struct([f for f in turn if f.name != drop_in_turns])
        fields = [
            pa.field("turns", pa.list_(kept), False) if f.name == "turns" else f for f in fields
        ]
    return pa.schema(fields, metadata=schema.metadata)


def test_nullable_column_added_later_reads_as_nulls_in_old_data(storage_config, monkeypatch):
    storage = Storage(storage_config)
    old = old_schema(schemas.TRAJECTORIES, "rollout_logprobs", drop_in_turns="query")
    table = sample("trajectories", rows=12)
    with monkeypatch.context() as m:  # data written by an older version of the code
        m.setitem(schemas.SCHEMAS, "trajectories", old)
        old_data = table.select(old.names).cast(old)
        write_stage(storage, storage.join("old"), old_data, "trajectories", rows_per_part=5)

    back = read_stage(storage, storage.join("old"))
    assert back.schema.equals(schemas.TRAJECTORIES)
    assert back["rollout_logprobs"].null_count == 12
    unchanged = [n for n in old.names if n != "turns"]
    assert back.select(unchanged).equals(table.select(unchanged))
    for got, want in zip(back["turns"].to_pylist(), table["turns"].to_pylist(), strict=True):
        assert [t.pop("query") for t in got] == [None] * len(got)
        assert got == [{k: v for k, v in t.items() if k != "query"} for t in want]


def test_old_data_missing_a_required_column_is_an_error(storage_config, monkeypatch):
    storage = Storage(storage_config)
    old = old_schema(schemas.PROMPTS, "question")
    with monkeypatch.context() as m:
        m.setitem(schemas.SCHEMAS, "prompts", old)
        write_stage(storage, storage.join("old"), fake_prompts(3).select(old.names), "prompts")
    with pytest.raises(DatasetValidationError, match="'question'"):
        read_stage(storage, storage.join("old"))
