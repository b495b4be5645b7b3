"""Stage-dataset throughput: write and read N synthetic trajectories (~2k tokens each).

    .venv/bin/python benchmarks/storage.py [--rows 100000] [--tokens 2048] [--turns 4]
        [--targets local,s3] [--backends arrow,fsspec] [--repeat 1]

Generates the trajectories once (TRAJECTORIES schema, numpy, in batches), then for each
target (a temporary local folder; a moto S3 server this script starts as a separate
process on 127.0.0.1) and each bulk backend (pyarrow's native filesystem, fsspec)
times (after a small warm-up run) `write_stage` (validate, encode zstd Parquet, sha256, upload, commit) and a
streaming `iter_stage_batches` read. MB/s is of the Arrow (in-memory) bytes; Parquet
bytes are printed beside. moto is a single Python process, so S3 numbers measure the
client against moto, not against a real object store.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid

from a2tgpo.config import StorageConfig
from a2tgpo.data.fakes import fake_trajectory_batches
from a2tgpo.data.schemas import TRAJECTORIES
from a2tgpo.data.stage import iter_stage_batches, write_stage
from a2tgpo.data.storage import Storage
from a2tgpo.data.validate import Validator

BUCKET = "a2tgpo-bench"


def start_moto() -> tuple[subprocess.Popen, str]:
    """A moto S3 server in its own process (not a thread: it must not share our GIL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    deadline = time.monotonic() + 60
    while True:
        try:
            client.create_bucket(Bucket=BUCKET)
            return server, endpoint
        except Exception:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise
            time.sleep(0.2)


def measure(storage: Storage, batches: list, arrow_mb: float) -> dict[str, float]:
    uri = storage.join(f"bench-{uuid.uuid4().hex[:8]}")
    start = time.perf_counter()
    manifest = write_stage(storage, uri, iter(batches), "trajectories")
    write_s = time.perf_counter() - start
    start = time.perf_counter()
    rows = sum(b.num_rows for b in iter_stage_batches(storage, uri))
    read_s = time.perf_counter() - start
    assert rows == manifest.num_rows
    storage.remove(uri, recursive=True)
    parquet_mb = sum(f.size for f in manifest.files) / 1e6
    return {
        "write_s": write_s,
        "read_s": read_s,
        "write_mb_s": arrow_mb / write_s,
        "read_mb_s": arrow_mb / read_s,
        "parquet_mb": parquet_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--targets", default="local,s3")
    parser.add_argument("--backends", default="arrow,fsspec")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the best is shown")
    args = parser.parse_args()

    start = time.perf_counter()
    batches = list(fake_trajectory_batches(args.rows, tokens=args.tokens, turns=args.turns))
    arrow_mb = sum(b.nbytes for b in batches) / 1e6
    tokens = sum(len(b.column("token_ids").flatten()) for b in batches)
    print(
        f"{args.rows:,} trajectories, {tokens / 1e6:.0f}M tokens, {arrow_mb:,.0f} MB in Arrow "
        f"(generated in {time.perf_counter() - start:.1f}s)"
    )
    start = time.perf_counter()
    validate = Validator(TRAJECTORIES)
    for batch in batches:
        validate(batch)
    seconds = time.perf_counter() - start
    print(f"validation alone: {seconds:.2f}s ({arrow_mb / seconds:,.0f} MB/s)")

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    server = None
    try:
        with tempfile.TemporaryDirectory(prefix="a2tgpo-bench-") as folder:
            configs = {"local": StorageConfig(root=folder)}
            if "s3" in args.targets:
                server, endpoint = start_moto()
                configs["s3"] = StorageConfig(
                    root=f"s3://{BUCKET}/bench", endpoint_url=endpoint, region="us-east-1"
                )
            print(
                f"{'target':8} {'backend':8} {'write MB/s':>11} {'read MB/s':>10} "
                f"{'write s':>8} {'read s':>7} {'parquet MB':>11}"
            )
            for target in args.targets.split(","):
                for backend in args.backends.split(","):
                    storage = Storage(configs[target], bulk=backend)  # type: ignore[arg-type]
                    measure(storage, batches[:2], arrow_mb)  # warm-up: clients, pools, caches
                    runs = [measure(storage, batches, arrow_mb) for _ in range(args.repeat)]
                    r = {k: max(run[k] for run in runs) for k in ("write_mb_s", "read_mb_s")}
                    r |= {k: min(run[k] for run in runs) for k in ("write_s", "read_s")}
                    r["parquet_mb"] = runs[0]["parquet_mb"]
                    print(
                        f"{target:8} {backend:8} {r['write_mb_s']:11,.0f} {r['read_mb_s']:10,.0f} "
                        f"{r['write_s']:8.1f} {r['read_s']:7.1f} {r['parquet_mb']:11,.0f}",
                        flush=True,
                    )
    finally:
        if server is not None:
            server.kill()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"peak RSS of this process: {peak:.1f} GB")


if __name__ == "__main__":
    main()
