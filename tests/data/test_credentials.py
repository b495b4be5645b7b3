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


@pytest.fixture
def redacting_logs():
    """The CLI's redaction, installed for one test (it is process-wide)."""
    from a2tgpo.cli_common import install_secret_redaction

    previous = logging.getLogRecordFactory()
    install_secret_redaction()
    yield
    logging.setLogRecordFactory(previous)


def test_every_log_record_is_redacted(redacting_logs, monkeypatch, caplog):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "FwoGZXIvYXdzSESSIONTOKEN0042")
    caplog.set_level(logging.DEBUG)
    # a CLI test may have quieted botocore (NOISY_LOGGERS): this test needs its DEBUG lines
    caplog.set_level(logging.DEBUG, logger="botocore.endpoint")
    log = logging.getLogger("botocore.endpoint")
    headers = {
        "Authorization": f"AWS4-HMAC-SHA256 Credential={KEY_ID}/20261130/us-east-1/s3",
        "X-Amz-Security-Token": b"OTHER-TOKEN-VALUE",
    }
    log.debug("Sending http request: headers=%s", headers)
    log.debug("Authorization: Bearer opaque-bearer-token")
    log.debug("presigned https://b.s3/k?X-Amz-Credential=AK&X-Amz-Signature=deadbeef")
    log.debug("session %s secret %s", "FwoGZXIvYXdzSESSIONTOKEN0042", SECRET)
    try:
        raise RuntimeError(f"failed with {SECRET}")
    except RuntimeError:
        log.exception("boom")
    text = caplog.text
    for value in (KEY_ID, SECRET, "OTHER-TOKEN-VALUE", "opaque-bearer-token", "deadbeef",
                  "SESSIONTOKEN"):  # fmt: skip
        assert value not in text, value
    assert "'Authorization': '***'" in text and "X-Amz-Signature=***" in text


def test_verbose_cli_logs_carry_no_aws_credentials(s3_endpoint, tmp_path):
    """`a2tgpo -v` shows botocore's DEBUG lines (signed request headers included)."""
    import os
    import subprocess
    import sys

    from tests.conftest import BUCKET, REGION

    root = f"s3://{BUCKET}/redact-{uuid.uuid4().hex[:8]}"
    args = ["-v", "advantages", "--scored", f"{root}/missing", "--out", f"{root}/out"]
    args += ["--set", f"storage.root={root}", "--set", f"storage.endpoint_url={s3_endpoint}"]
    args += ["--set", f"storage.region={REGION}"]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET}
    result = subprocess.run(
        [sys.executable, "-c", "from a2tgpo.cli import main; main()", *args],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )  # fmt: skip
    output = result.stdout + result.stderr
    (tmp_path / "cli.log").write_text(output)
    assert result.returncode == 2 and "is not committed" in output, output[-4000:]
    assert "Authorization" in output, output[-4000:]  # botocore's request lines were logged
    assert KEY_ID not in output and SECRET not in output
