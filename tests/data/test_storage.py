"""Storage: URIs, the atomic create-if-absent, listings and deletes on local and S3."""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor

import pytest

from a2tgpo.config import StorageConfig
from a2tgpo.data.storage import Storage


def test_uris_of_a_local_store(tmp_path):
    storage = Storage(StorageConfig(root=str(tmp_path)))
    assert storage.is_local and storage.root == str(tmp_path)
    assert storage.stage_uri("r1", 7, "rollout") == f"{tmp_path}/r1/iter=00007/rollout"
    assert storage.join(f"{tmp_path}/a", "b", "c.json") == f"{tmp_path}/a/b/c.json"
    assert storage.path(f"file://{tmp_path}/x") == f"{tmp_path}/x"


def test_uris_of_an_s3_store():
    storage = Storage(StorageConfig(root="s3://bucket/some/prefix/", endpoint_url="http://h:1"))
    assert storage.root == "s3://bucket/some/prefix"
    assert (
        storage.stage_uri("r1", 12, "score-ig") == "s3://bucket/some/prefix/r1/iter=00012/score-ig"
    )
    assert storage.path("s3://bucket/k") == "bucket/k"
    with pytest.raises(ValueError):
        storage.path("/local/file")


@pytest.mark.parametrize("run_id, stage", [("a/b", "rollout"), ("run", "../x"), ("", "s")])
def test_bad_names_are_refused(tmp_path, run_id, stage):
    with pytest.raises(ValueError):
        Storage(StorageConfig(root=str(tmp_path))).stage_uri(run_id, 0, stage)


def test_credentials_in_urls_are_refused_without_echoing_them():
    with pytest.raises(ValueError) as caught:
        Storage(StorageConfig(root="s3://AKIDX:hunter2@bucket/x"))
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ValueError):
        Storage(StorageConfig(root="s3://b/x", endpoint_url="http://u:hunter2@host:9000"))


def test_a_config_built_without_validation_is_checked_again(tmp_path):
    """The config refuses these; `model_construct` skips that, `Storage` does not."""
    with pytest.raises(ValueError) as caught:
        Storage(StorageConfig.model_construct(root="s3://AKIDX:hunter2@bucket/x"))
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ValueError, match="unsupported storage root"):
        Storage(StorageConfig.model_construct(root="gs://bucket/x"))
    with pytest.raises(ValueError, match="credentials"):
        Storage(StorageConfig.model_construct(root=str(tmp_path), endpoint_url="http://h/?token=x"))


def test_put_if_absent_creates_once(storage_config):
    storage = Storage(storage_config)
    uri = storage.join("stage", "manifest.json")
    assert storage.put_if_absent(uri, b"first")
    assert not storage.put_if_absent(uri, b"second")
    assert storage.read_bytes(uri) == b"first"


def test_put_if_absent_has_one_winner_among_threads(storage_config):
    storage = Storage(storage_config)
    uri = storage.join("stage", "manifest.json")
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda i: storage.put_if_absent(uri, str(i).encode()), range(8)))
    assert won.count(True) == 1
    assert storage.read_bytes(uri) == str(won.index(True)).encode()
    assert storage.list(storage.join("stage")) == ["manifest.json"]  # no temporary files left


def test_list_remove_exists(storage_config):
    storage = Storage(storage_config)
    storage.write_bytes(storage.join("d", "a.txt"), b"a")
    storage.write_bytes(storage.join("d", "sub", "b.txt"), b"b")
    assert storage.list(storage.join("d")) == ["a.txt", "sub"]
    assert storage.list(storage.join("nothing")) == []
    storage.remove(storage.join("d", "sub"), recursive=True)
    storage.remove(storage.join("d", "never-there"))
    assert storage.list(storage.join("d")) == ["a.txt"]
    assert storage.exists(storage.join("d", "a.txt"))
    with storage.open(storage.join("d", "a.txt")) as f:
        assert f.read() == b"a"


def test_a_pickled_storage_works_in_its_new_home(storage_config):
    storage = Storage(storage_config)
    storage.write_bytes(storage.join("x"), b"1")
    clone = pickle.loads(pickle.dumps(storage))
    assert repr(clone) == repr(storage)
    assert clone.read_bytes(clone.join("x")) == b"1"
