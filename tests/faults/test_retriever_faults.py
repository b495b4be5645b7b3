"""A dead, a slow and a lying retrieval server under a real rollout: every search
becomes an error observation within the deadline, the rollout commits, and the
manifest counts the failures with their first reason (a warning names it too)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from a2tgpo.data.fakes import fake_prompts
from a2tgpo.data.stage import read_manifest, read_stage
from a2tgpo.envs.retrievers import HttpRetriever
from a2tgpo.envs.served_retriever import free_port
from tests.rollout.test_trajectories import SEARCH_THEN_ANSWER, _config, _rollout

TIMEOUT_S, RETRIES = 1.0, 1
SEARCHES = 2 * 2 * 2  # prompts x group size x searches per trajectory


def trickle_server() -> Iterator[str]:
    """Accepts, reads the request, then sends a status line one byte a second."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=trickle, args=(conn,), daemon=True).start()

    def trickle(conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}":
                conn.sendall(bytes([byte]))
                time.sleep(1.0)
        except OSError:
            pass

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/retrieve"
    listener.close()


def lying_server(body: Callable[[dict], bytes]) -> Iterator[str]:
    """Answers 200 to every POST with `body(request)`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            data = body(request)
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/retrieve"
    server.shutdown()


def dead_server() -> Iterator[str]:
    yield f"http://127.0.0.1:{free_port()}/retrieve"  # nothing listens there


SERVERS = {
    "dead": (dead_server, "connection error"),
    "slow": (trickle_server, "deadline exceeded"),
    "not-json": (lambda: lying_server(lambda r: b"<html>oops</html>"), "malformed response"),
    "too-few-results": (
        lambda: lying_server(lambda r: json.dumps({"result": [[]]}).encode()),
        "malformed response",
    ),
}


@pytest.mark.parametrize("kind", sorted(SERVERS))
def test_a_broken_retriever_is_counted_not_fatal(kind, tmp_path, tokenizer, tiny_model_dir, caplog):
    make_server, reason = SERVERS[kind]
    servers = make_server()
    url = next(servers)
    retriever = HttpRetriever(url, timeout_s=TIMEOUT_S, retries=RETRIES, backoff_s=0.05)
    start = time.monotonic()
    storage, out = _rollout(
        _config(tmp_path), tokenizer, tiny_model_dir, fake_prompts(2), SEARCH_THEN_ANSWER, retriever
    )
    elapsed = time.monotonic() - start
    next(servers, None)  # stop the server
    # every search is one batched call per turn: two turns, each within its deadlines
    assert elapsed < 2 * (RETRIES + 1) * (TIMEOUT_S + 0.5) + 10, elapsed
    stats = read_manifest(storage, out).stats
    assert stats["tool_calls"] == stats["tool_errors"] == SEARCHES
    assert reason in stats["tool_error_first"], stats["tool_error_first"]
    assert stats["finish_reasons"] == {"answer": 4}  # the trajectories still end properly
    assert read_stage(storage, out, "trajectories").num_rows == 4
    assert any("searches failed" in r.getMessage() for r in caplog.records), caplog.text
