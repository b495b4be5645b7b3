"""Shared fixtures: a real S3 endpoint (moto's server on 127.0.0.1) and store configs.

`s3_endpoint` starts moto's ThreadedMotoServer once per session (as s3fs's own test
suite does), creates the bucket `BUCKET` and sets dummy AWS credentials in the
environment for the session. `storage_config` is parametrized: the same test runs
against a fresh local folder and a fresh prefix of that bucket.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator

import pytest

from a2tgpo.config import StorageConfig

BUCKET = "a2tgpo-test"
REGION = "us-east-1"
_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",  # never try the instance metadata endpoint
}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """http://127.0.0.1:<port> of a moto S3 server holding an empty bucket BUCKET."""
    import boto3
    from moto.server import ThreadedMotoServer

    saved = {key: os.environ.get(key) for key in _AWS_ENV}
    os.environ.update(_AWS_ENV)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name=REGION).create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(params=["local", "s3"])
def storage_config(request: pytest.FixtureRequest, tmp_path) -> StorageConfig:
    """A fresh, empty store: a tmp folder, or a unique prefix in the moto bucket."""
    if request.param == "local":
        return StorageConfig(root=str(tmp_path / "store"))
    return StorageConfig(
        root=f"s3://{BUCKET}/{uuid.uuid4().hex[:10]}",
        endpoint_url=request.getfixturevalue("s3_endpoint"),
        region=REGION,
    )
