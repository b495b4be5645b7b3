"""The optimizer state in safetensors + JSON: a resumed engine steps exactly as the one
that never stopped (DeepSpeed on CPU in a subprocess, one rank)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PROBE = Path(__file__).with_name("resume_probe.py")
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_probe(model_dir: Path, work: Path, dtype: str, stage: int) -> dict:
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "PYTHONPATH": str(REPO),
    }
    log = work / "probe.log"
    work.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        code = subprocess.run(
            [sys.executable, str(PROBE), str(model_dir), str(work), dtype, str(stage)],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=600,
        ).returncode
    assert code == 0, f"probe failed ({code}):\n{log.read_text()[-6000:]}"
    return json.loads((work / "result.json").read_text())


@pytest.mark.parametrize(
    ("dtype", "stage"), [("float32", 3), ("bfloat16", 3), ("float32", 2), ("float32", 0)]
)
def test_resumed_steps_match_an_uninterrupted_engine(tiny_model_dir, tmp_path, dtype, stage):
    result = run_probe(tiny_model_dir, tmp_path / "work", dtype, stage)
    assert result["step"] == 2
    assert result["resumed"] == 0.0, result  # bit for bit
    assert result["fresh"] > 1e-6, result  # and the state mattered
    assert "state.json" in result["files"]
    assert all(f.endswith((".safetensors", ".json")) for f in result["files"])
