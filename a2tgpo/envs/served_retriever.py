"""`a2tgpo serve-retriever` in a background process, for scripts and tests.

    with ServedRetriever(corpus="passages.jsonl", log="server.log") as server:
        config = apply_overrides(config, [*server.overrides()])  # env.retriever=http, url

The process runs in its own session so that `stop()` ends it and any children
together (SIGTERM: uvicorn finishes its requests; SIGKILL after `stop_timeout_s`).
Its output goes to `log`, which a failure to start quotes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


class ServerStartError(RuntimeError):
    """The server exited or did not answer /health in time; the message quotes its log."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServedRetriever:
    """The retrieval server on 127.0.0.1:<port> in a subprocess (`extra_args` are more
    `serve-retriever` options, e.g. ["--topk-max", "5"])."""

    def __init__(
        self,
        corpus: str | Path,
        log: str | Path,
        *,
        port: int | None = None,
        cache_dir: str | Path | None = None,
        extra_args: list[str] | None = None,
        start_timeout_s: float = 120.0,
        stop_timeout_s: float = 15.0,
        verbose: bool = False,
    ):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(log)
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        args = ["-v"] if verbose else []
        args += ["serve-retriever", "--corpus", str(corpus), "--port", str(self.port)]
        if cache_dir is not None:
            args += ["--cache-dir", str(cache_dir)]
        self.args = args + list(extra_args or [])
        self.proc: subprocess.Popen | None = None

    @property
    def retrieve_url(self) -> str:
        return f"{self.url}/retrieve"

    def overrides(self) -> list[str]:
        """Config overrides that point a run at this server."""
        return ["env.retriever=http", f"env.retriever_url={self.retrieve_url}"]

    def start(self) -> ServedRetriever:
        code = "from a2tgpo.cli import main; main()"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code, *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # stop() ends the whole group
            )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            if self.healthy():
                return self
            time.sleep(0.2)
        self.stop()
        raise ServerStartError(f"no /health within {self.start_timeout_s} s:\n{self.tail()}")

    def healthy(self) -> bool:
        try:
            response = httpx.get(f"{self.url}/health", trust_env=False, timeout=2)
        except httpx.TransportError:
            return False
        return response.status_code == 200

    def stop(self) -> int | None:
        """SIGTERM to the process group, SIGKILL if it hangs; the exit code."""
        if self.proc is None:
            return None
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            return self.proc.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()
        except ProcessLookupError:
            return self.proc.wait()

    def tail(self, chars: int = 4000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text[-chars:]

    def __enter__(self) -> ServedRetriever:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
