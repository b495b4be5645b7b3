"""Credentials come from the environment and never show up anywhere we write or raise."""

from __future__ import annotations

import logging
import pickle
import traceback
import uuid

import pytest

from a2tgpo.config import StorageConfig
from a2tgpo.data.directories import commit_directory, materialize
from a2tgpo.data.fakes import fake_prompts
from a2tgpo.data.loaders import load_flashrag
from a2tgpo.data.stage import read_stage, write_stage
from a2tgpo.data.storage import Storage

KEY_ID = "AKIACANARYKEYID00042"
SECRET = "canary/Secret+Value/0042xyzXYZ"


def failure_text(call) -> str:
    with pytest.raises(Exception) as caught:
        call()
    return "".join(traceback.format_exception(caught.value)) + repr(caught.value)


def test_credentials_never_leak(s3_endpoint, monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    caplog.set_level(logging.DEBUG)  # botocore, s3fs, moto and ours, all of it
    config = StorageConfig(
        root=f"s3://a2tgpo-test/leak-{uuid.uuid4().hex[:8]}",
        endpoint_url=s3_endpoint,
        region="us-east-1",
    )
    storage = Storage(config)
    uri = storage.stage_uri("run", 0, "prompts")
    manifest = write_stage(storage, uri, fake_prompts(5), "prompts", stats={"n": 5})
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    commit_directory(storage, tmp_path / "ckpt", storage.join("ckpt"))
    materialize(storage, storage.join("ckpt"), cache_dir=tmp_path / "cache")

    written = [
        storage.read_bytes(storage.join(uri, "manifest.json")).decode(),
        manifest.model_dump_json(),
        repr(storage),
        repr(config),
        str(pickle.dumps(storage)),
        str(storage.fs.storage_options),
    ]
    failures = [
        failure_text(lambda: read_stage(storage, storage.join("missing"))),
        failure_text(
            lambda: write_stage(
                storage, storage.join("bad"), fake_prompts(2).drop_columns(["meta"]), "prompts"
            )
        ),
        failure_text(
            lambda: read_stage(
                Storage(config.model_copy(update={"root": "s3://no-such-bucket-x"})),
                "s3://no-such-bucket-x/a",
            )
        ),
        failure_text(lambda: storage.read_bytes("s3://no-such-bucket-x/a")),
        failure_text(lambda: load_flashrag("s3://no-such-bucket-x/a.jsonl", storage=storage)),
        failure_text(lambda: Storage(StorageConfig(root=f"s3://{KEY_ID}:{SECRET}@bucket/x"))),
    ]
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("a2tgpo"))
    assert "committed" in ours  # our logs did run

    for text in [*written, *failures, ours]:
        assert SECRET not in text and KEY_ID not in text
    # botocore's DEBUG lines carry the key id inside the signed Authorization header;
    # the secret itself never leaves the process (SigV4 signs with a derived key).
    assert SECRET not in caplog.text
