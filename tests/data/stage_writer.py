"""A separate writer process for the crash and race tests (run as a script, not collected).

    python stage_writer.py '{"config": {...}, "uri": ..., "mode": "crash" | "race", "seed": 0,
                             "rows": 40, "barrier": "/tmp/dir", "writers": 3}'

crash: stream a trajectories stage, and once two parts are in the store, die with
os._exit(3) before the manifest (no cleanup runs). race: stream the stage, wait at a
file barrier until all `writers` processes got there, commit, print the returned
manifest's attempt as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from a2tgpo.config import StorageConfig
from a2tgpo.data.fakes import fake_trajectory_batches
from a2tgpo.data.stage import write_stage
from a2tgpo.data.storage import Storage

ROWS_PER_PART = 8


def wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("stage_writer: timed out waiting")
        time.sleep(0.02)


def main(args: dict) -> None:
    storage = Storage(StorageConfig(**args["config"]))
    uri = args["uri"]
    batches = fake_trajectory_batches(args["rows"], tokens=64, batch_rows=4, seed=args["seed"])

    def stream():
        yield from batches
        if args["mode"] == "crash":
            wait_until(lambda: len(storage.list(uri)) >= 2)
            os._exit(3)
        barrier = Path(args["barrier"])
        (barrier / f"ready-{os.getpid()}").touch()
        wait_until(lambda: len(list(barrier.iterdir())) >= args["writers"])

    manifest = write_stage(storage, uri, stream(), "trajectories", rows_per_part=ROWS_PER_PART)
    print(json.dumps({"attempt": manifest.attempt, "seed": args["seed"]}))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
