"""The commit protocol under crashes and concurrent writers, on a local folder and S3."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pytest

from a2tgpo.data.errors import NotCommitted
from a2tgpo.data.fakes import fake_trajectories
from a2tgpo.data.stage import is_committed, read_manifest, read_stage, write_stage
from a2tgpo.data.storage import Storage

WRITER = Path(__file__).with_name("stage_writer.py")


def trajectories(seed: int, rows: int = 40) -> pa.Table:
    return fake_trajectories(rows, tokens=64, batch_rows=4, seed=seed)


def assert_only_manifest_files(storage: Storage, uri: str) -> None:
    manifest = read_manifest(storage, uri)
    assert manifest is not None
    assert storage.list(uri) == sorted([f.path for f in manifest.files] + ["manifest.json"])


def test_exception_before_the_manifest_leaves_nothing_then_rerun_commits(storage_config):
    storage = Storage(storage_config)
    uri = storage.stage_uri("run", 2, "rollout")
    table = trajectories(seed=0)

    def crashing():
        yield from table.to_batches(max_chunksize=4)
        raise RuntimeError("rollout worker died")

    with pytest.raises(RuntimeError, match="worker died"):
        write_stage(storage, uri, crashing(), "trajectories", rows_per_part=8)
    assert not is_committed(storage, uri)
    assert storage.list(uri) == []
    write_stage(storage, uri, table, "trajectories", rows_per_part=8)
    assert read_stage(storage, uri).equals(table)


def run_writer(storage_config, uri: str, mode: str, seed: int = 0, **extra) -> subprocess.Popen:
    args = {"config": storage_config.model_dump(), "uri": uri, "mode": mode, "seed": seed}
    args.update(rows=40, **extra)
    return subprocess.Popen(
        [sys.executable, str(WRITER), json.dumps(args)], stdout=subprocess.PIPE, text=True
    )


def test_killed_writer_leaves_an_invisible_stage_that_a_rerun_cleans_and_commits(storage_config):
    storage = Storage(storage_config)
    uri = storage.stage_uri("run", 0, "rollout")
    crashed = run_writer(storage_config, uri, "crash")
    assert crashed.wait(timeout=60) == 3
    leftovers = storage.list(uri)
    assert len(leftovers) >= 2 and "manifest.json" not in leftovers
    with pytest.raises(NotCommitted):
        read_stage(storage, uri)

    manifest = write_stage(storage, uri, trajectories(seed=1), "trajectories", rows_per_part=8)

    assert not set(leftovers) & {f.path for f in manifest.files}
    assert_only_manifest_files(storage, uri)
    assert read_stage(storage, uri).equals(trajectories(seed=1))


def test_concurrent_threads_end_with_one_committed_copy(storage_config):
    storage = Storage(storage_config)
    uri = storage.stage_uri("run", 1, "rollout")
    writers = 4
    barrier = threading.Barrier(writers)

    def write(seed: int):
        def stream():
            yield from trajectories(seed).to_batches()
            barrier.wait(timeout=30)  # all parts written: every writer races on the manifest

        return write_stage(storage, uri, stream(), "trajectories", rows_per_part=8)

    with ThreadPoolExecutor(writers) as pool:
        manifests = list(pool.map(write, range(writers)))

    assert len({m.attempt for m in manifests}) == 1
    assert_only_manifest_files(storage, uri)
    back = read_stage(storage, uri)
    assert sum(back.equals(trajectories(seed)) for seed in range(writers)) == 1


def test_concurrent_processes_end_with_one_committed_copy(storage_config, tmp_path):
    uri = Storage(storage_config).stage_uri("run", 1, "rollout")
    writers = 3
    procs = [
        run_writer(storage_config, uri, "race", seed, barrier=str(tmp_path), writers=writers)
        for seed in range(writers)
    ]
    outputs = [json.loads(p.communicate(timeout=90)[0]) for p in procs]
    assert [p.returncode for p in procs] == [0] * writers

    storage = Storage(storage_config)
    assert len({o["attempt"] for o in outputs}) == 1
    assert_only_manifest_files(storage, uri)
    back = read_stage(storage, uri)
    assert sum(back.equals(trajectories(seed)) for seed in range(writers)) == 1
