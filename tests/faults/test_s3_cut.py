"""Cut the S3 endpoint in the middle of a stage write: the write fails, nothing becomes
visible, and the rerun after the endpoint is back commits the whole dataset.

A TCP proxy stands between the store and moto's S3 server; `cut()` drops every open
connection and refuses new ones, as a network partition would.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator

import pyarrow as pa
import pytest

from a2tgpo.config import StorageConfig
from a2tgpo.data.fakes import fake_trajectory_batches
from a2tgpo.data.stage import read_manifest, read_stage, write_stage
from a2tgpo.data.storage import Storage
from tests.conftest import BUCKET, REGION

ROWS, ROWS_PER_PART = 48, 8


class CuttableProxy:
    """127.0.0.1:<port> relaying to `target`, until `cut()`."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open: list[socket.socket] = []
        self.is_cut = False
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self.lock:
            self.is_cut = True
            for s in self.open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
            self.open.clear()

    def restore(self) -> None:
        with self.lock:
            self.is_cut = False

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            with self.lock:
                if self.is_cut:
                    client.close()  # the endpoint is unreachable: connection reset
                    continue
                upstream = socket.create_connection(self.target)
                self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def store_behind_proxy(s3_endpoint: str) -> tuple[Storage, CuttableProxy]:
    host, port = s3_endpoint.removeprefix("http://").split(":")
    proxy = CuttableProxy((host, int(port)))
    config = StorageConfig(
        root=f"s3://{BUCKET}/{uuid.uuid4().hex[:10]}",
        endpoint_url=f"http://127.0.0.1:{proxy.port}",
        region=REGION,
        rows_per_part=ROWS_PER_PART,
    )
    return Storage(config), proxy


@pytest.fixture
def proxied_store(s3_endpoint: str, monkeypatch) -> Iterator[tuple[Storage, CuttableProxy]]:
    # One attempt per S3 call: the production retries only make the failure take longer
    # (over a minute of backoff), and this test is about what a failure leaves behind.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    storage, proxy = store_behind_proxy(s3_endpoint)
    yield storage, proxy
    proxy.cut()


def dataset() -> Iterator[pa.RecordBatch]:
    return fake_trajectory_batches(ROWS, tokens=32, batch_rows=ROWS_PER_PART, seed=0)


def batches_cutting_after(parts: int, proxy: CuttableProxy) -> Iterator[pa.RecordBatch]:
    """The dataset's batches; the endpoint goes away once `parts` parts were produced."""
    for produced, batch in enumerate(dataset()):
        if produced == parts:
            proxy.cut()
        yield batch


def test_a_write_cut_off_mid_stage_commits_nothing_then_reruns_whole(proxied_store):
    storage, proxy = proxied_store
    uri = storage.join("run", "iter=00000", "trajectories")
    with pytest.raises(Exception):  # noqa: B017 - whatever the S3 client raises when cut off
        write_stage(storage, uri, batches_cutting_after(2, proxy), "trajectories")
    proxy.restore()
    assert read_manifest(storage, uri) is None  # nothing half-written is visible

    manifest = write_stage(storage, uri, dataset(), "trajectories")
    table = read_stage(storage, uri, "trajectories")
    expected = pa.Table.from_batches(list(dataset()))
    assert table.num_rows == manifest.num_rows == ROWS
    assert table.select(["trajectory_id"]).equals(expected.select(["trajectory_id"]))
    # the cut attempt's parts are gone: the folder holds the manifest and its own parts
    assert set(storage.list(uri)) == {"manifest.json", *(f.path for f in manifest.files)}


def test_a_short_outage_mid_write_is_ridden_out_by_the_retries(s3_endpoint):
    storage, proxy = store_behind_proxy(s3_endpoint)
    uri = storage.join("run", "iter=00000", "trajectories")

    def blip() -> Iterator[pa.RecordBatch]:
        for produced, batch in enumerate(dataset()):
            if produced == 2:
                proxy.cut()
                threading.Timer(1.0, proxy.restore).start()  # back within a second
            yield batch

    manifest = write_stage(storage, uri, blip(), "trajectories")
    assert read_stage(storage, uri, "trajectories").num_rows == manifest.num_rows == ROWS
    assert set(storage.list(uri)) == {"manifest.json", *(f.path for f in manifest.files)}
    proxy.cut()
