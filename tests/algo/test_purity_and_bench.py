"""The algorithm core imports only torch, numpy and the standard library; the
estimator benchmark runs (on a small batch here; its full size is a benchmark)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {"torch", "numpy", "__future__", "dataclasses", "typing", "math", "a2tgpo"}


def test_algo_imports_only_torch_and_numpy():
    for path in (ROOT / "a2tgpo" / "algo").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in ALLOWED, f"{path.name} imports {name}"
                if top == "a2tgpo":
                    assert name.startswith("a2tgpo.algo"), f"{path.name} imports {name}"


def test_estimator_benchmark_runs():
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "estimator.py"),
            "--groups",
            "300",
            "--repeat",
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    assert out.strip().splitlines()[-1].startswith("rows_per_s=")
