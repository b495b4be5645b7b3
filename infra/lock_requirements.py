"""Regenerate the fully pinned requirement sets of the container images.

    python infra/lock_requirements.py            # writes requirements/gpu.txt and
                                                 # infra/mlflow/requirements.txt

Needs network access to PyPI and pip >= 24 (it runs `pip install --dry-run --report`
for Linux x86_64 / CPython 3.11, whatever machine it runs on). Nothing is installed.

requirements/gpu.txt, the CUDA image (infra/Dockerfile), is resolved from
- vLLM's own requirements, read from its wheel's metadata, with one override:
  vLLM pins `fastapi<0.137` but Prefect 3.9 needs `fastapi>=0.139`; one strict
  resolution cannot hold both, so fastapi is pinned to the CPU lock's version
  (vLLM's offline engine, the only part the pipeline uses, runs with it);
- torch==2.14.0 (the CUDA build vLLM 0.33.0 pins; on PyPI it is built for CUDA 13.0);
- the project's dependencies (pyproject.toml), DeepSpeed's requirements and boto3;
- requirements/lock.txt as constraints, so both environments share every version
  they can (not torch, triton and apache-tvm-ffi, which the CUDA stack pins itself).
vLLM itself is then listed too: the image installs the whole file with --no-deps.
DeepSpeed is left out: it is an sdist built against the installed torch (Dockerfile).

infra/mlflow/requirements.txt, the MLflow server image, is mlflow with the Postgres
driver and boto3 for the S3 artifact store, under the same constraints.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
VLLM = "vllm==0.33.0"
TORCH = "torch==2.14.0"
DEEPSPEED_REQUIREMENTS = [  # deepspeed 0.19.8 requirements/requirements.txt, + NVML on GPUs
    "einops",
    "hjson",
    "msgpack",
    "ninja",
    "numpy",
    "packaging>=20.0",
    "psutil",
    "py-cpuinfo",
    "pydantic>=2.0.0",
    "tqdm",
    "nvidia-ml-py",
]
MLFLOW_SERVER = ["mlflow==3.17.2", "psycopg2-binary==2.9.13", "boto3"]
# Pins of the CPU lock the CUDA stack replaces (or that only the CPU build needs).
NOT_SHARED = {"torch", "triton", "apache-tvm-ffi", "intel-openmp", "intel-cmplr-lib-ur"}
ENVIRONMENT = {
    "python_version": "3.11",
    "python_full_version": "3.11.11",
    "platform_machine": "x86_64",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}


def pip_report(requirements: list[str], *, constraints: Path | None, no_deps=False) -> list:
    """What pip would install for Linux x86_64 CPython 3.11: [(name, version, metadata)]."""
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(39, 4, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    with tempfile.TemporaryDirectory() as tmp:
        req_file = Path(tmp) / "in.txt"
        req_file.write_text("\n".join(requirements) + "\n")
        cmd = [sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "-q"]
        cmd += ["--ignore-installed", "--only-binary=:all:", "--implementation", "cp"]
        cmd += ["--python-version", "3.11", "--report", f"{tmp}/report.json"]
        cmd += [arg for p in platforms for arg in ("--platform", p)]
        cmd += ["-r", str(req_file)]
        if constraints is not None:
            cmd += ["-c", str(constraints)]
        if no_deps:
            cmd.append("--no-deps")
        subprocess.run(cmd, check=True)
        report = json.loads((Path(tmp) / "report.json").read_text())
    return [
        (item["metadata"]["name"], item["metadata"]["version"], item["metadata"])
        for item in report["install"]
    ]


def vllm_requirements(fastapi_pin: str) -> list[str]:
    """vLLM's requirements on Linux x86_64, fastapi replaced by `fastapi_pin`."""
    [(_, _, metadata)] = pip_report([VLLM], constraints=None, no_deps=True)
    out = []
    for line in metadata.get("requires_dist", []):
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(ENVIRONMENT):
            continue  # extras and other platforms
        req.marker = None
        out.append(fastapi_pin if req.name == "fastapi" else str(req))
    return out


def shared_constraints(tmp: Path) -> Path:
    lines = [
        line.strip()
        for line in LOCK.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    kept = [line for line in lines if line.split("==")[0].lower() not in NOT_SHARED]
    path = tmp / "constraints.txt"
    path.write_text("\n".join(kept) + "\n")
    return path


def write_pins(path: Path, header: str, pins: list[tuple[str, str]]) -> None:
    body = "\n".join(f"{name}=={version}" for name, version in sorted(pins, key=_key))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header.strip() + "\n" + body + "\n")
    print(f"wrote {path.relative_to(ROOT)} ({len(pins)} pins)")


def _key(pin: tuple[str, str]) -> str:
    return pin[0].lower().replace("_", "-")


GPU_HEADER = """
# The CUDA image's complete, resolved environment (infra/Dockerfile installs it with
# `pip install --no-deps -r requirements/gpu.txt`). Linux x86_64, CPython 3.11.
# Generated by `python infra/lock_requirements.py`; edit that script, not this file.
#
# Why --no-deps: vLLM 0.33.0 pins fastapi<0.137 (and torch==2.14.0), Prefect 3.9 needs
# fastapi>=0.139. No strict resolution holds both, so this set is vLLM's requirements
# with fastapi overridden to the CPU lock's 0.150.0 (vLLM's offline engine, the only
# part the pipeline uses, runs with it), resolved together with the project, DeepSpeed's
# requirements and requirements/lock.txt as constraints. torch 2.14.0 from PyPI is the
# CUDA 13.0 build (the cuda-toolkit / nvidia-*-cu13 wheels below): the node's driver
# must support CUDA 13 (>= 580). DeepSpeed (an sdist built against this torch) and the
# project itself are installed after this file, as in the Makefile.
"""

MLFLOW_HEADER = """
# The MLflow tracking server image's complete environment (infra/mlflow/Dockerfile
# installs it with --no-deps). Linux x86_64, CPython 3.11. mlflow with the Postgres
# driver (backend store) and boto3 (S3 / MinIO artifact store), under the versions of
# requirements/lock.txt. Generated by `python infra/lock_requirements.py`.
"""


def main() -> None:
    lock = dict(
        line.strip().split("==", 1) for line in LOCK.read_text().splitlines() if "==" in line
    )
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    project_deps = [d for d in project["dependencies"] if Requirement(d).name != "torch"]
    with tempfile.TemporaryDirectory() as tmp:
        constraints = shared_constraints(Path(tmp))
        gpu_in = vllm_requirements(f"fastapi[standard]=={lock['fastapi']}")
        gpu_in += [TORCH, *project_deps, *DEEPSPEED_REQUIREMENTS, "boto3"]
        gpu = [(n, v) for n, v, _ in pip_report(gpu_in, constraints=constraints)]
        gpu.append(tuple(VLLM.split("==")))
        write_pins(ROOT / "requirements" / "gpu.txt", GPU_HEADER, gpu)
        server = [(n, v) for n, v, _ in pip_report(MLFLOW_SERVER, constraints=constraints)]
        write_pins(ROOT / "infra" / "mlflow" / "requirements.txt", MLFLOW_HEADER, server)


if __name__ == "__main__":
    main()
