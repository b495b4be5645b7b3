"""Fixtures of the infrastructure checks.

`k8s_objects`: the Kubernetes objects of infra/k8s, built once per session. They are what
`kubectl kustomize infra/k8s` builds when kubectl is on the PATH (offline; the machine
image ships it), else the resources the kustomization lists, read directly. Nothing here
talks to a cluster.

`prefect_server`: a real `prefect server start` on 127.0.0.1, one per test module
(`running_prefect_server` starts one elsewhere, e.g. with its UI on for tests/ui), and
`prefect_cli`, the Prefect CLI run from the repository root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.infra.helpers import K8S, ROOT, load_yaml_documents


@pytest.fixture(scope="session")
def k8s_objects() -> list[dict[str, Any]]:
    """The objects `kubectl apply -k infra/k8s` would create."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        built = subprocess.run(
            [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
        )
        assert built.returncode == 0, f"kubectl kustomize failed:\n{built.stderr}"
        return [doc for doc in yaml.safe_load_all(built.stdout) if doc is not None]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in load_yaml_documents(K8S / name)]


PREFECT = [sys.executable, "-m", "prefect"]  # the CLI of the interpreter running the tests
STARTUP_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_prefect_server(
    home: Path, *, ui: bool = False, startup_timeout_s: float = STARTUP_TIMEOUT_S
) -> Iterator[tuple[str, dict[str, str]]]:
    """(api_url, env) of `prefect server start` on 127.0.0.1 with its own PREFECT_HOME
    (`home`, which must exist) and analytics off; its UI on when `ui`. The server's log is
    `home/server.log`; the server (its process group) is stopped on exit."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="true" if ui else "false",
        PREFECT_CLI_COLORS="false",
    )
    if ui:  # the UI's pages call this API (the default, /api on the same port, is the same)
        env.update(PREFECT_UI_API_URL=api_url, PREFECT_UI_URL=f"http://127.0.0.1:{port}")
    log = open(home / "server.log", "w")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stop it and its children
    )
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            assert server.poll() is None, (home / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "Prefect server did not start in time"
            time.sleep(0.5)
        yield api_url, env
    finally:
        stop_group(server)
        log.close()


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM a server's process group, SIGKILL it after 20 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """(api_url, env) of a fresh Prefect server (UI off), one per test module."""
    with running_prefect_server(tmp_path_factory.mktemp("prefect-home")) as server:
        yield server


def prefect_cli(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    """`prefect ARGS` from the repository root, as a user runs it; its stdout. Fails the
    test on a non-zero exit, with both outputs."""
    result = subprocess.run(
        [*PREFECT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"prefect {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout
