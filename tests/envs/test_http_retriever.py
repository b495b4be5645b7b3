"""HttpRetriever against a real HTTP server on 127.0.0.1 speaking Search-R1's /retrieve API."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from a2tgpo.envs.retrievers import HttpRetriever, Passage, RetrieverError
from a2tgpo.envs.tools import SearchTool


def _hits(queries: list[str], topk: int, scores: bool) -> list[list[dict]]:
    out = []
    for q in queries:
        docs = [{"id": str(i), "contents": f'"{q} {i}"\nText about {q}.'} for i in range(topk)]
        out.append([{"document": d, "score": 1.0 / (i + 1)} for i, d in enumerate(docs)]
                   if scores else docs)  # fmt: skip
    return out


class _Handler(BaseHTTPRequestHandler):
    """/retrieve: ok; /noscores: documents only; /slow; /flaky (500 once); /badjson; /bad400."""

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        hits: Counter = self.server.hits  # type: ignore[attr-defined]
        hits[self.path] += 1
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ok = {"result": _hits(req["queries"], req["topk"], req["return_scores"])}
        if self.path == "/slow":
            time.sleep(0.6)
        if self.path == "/flaky" and hits[self.path] == 1:
            return self._send(500, b"oops")
        if self.path == "/badjson":
            return self._send(200, b'{"result": [[{"document"')
        if self.path == "/bad400":
            return self._send(400, b'{"error": "bad request"}')
        if self.path == "/noscores":
            ok = {"result": _hits(req["queries"], req["topk"], scores=False)}
        if self.path == "/wrongcount":
            ok = {"result": []}
        self._send(200, json.dumps(ok).encode())


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.hits = Counter()  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv: ThreadingHTTPServer, path: str) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


def _client(srv: ThreadingHTTPServer, path: str, **kw: float) -> HttpRetriever:
    kw = {"timeout_s": 0.2, "retries": 2, "backoff_s": 0.01} | kw
    return HttpRetriever(_url(srv, path), **kw)


def test_search_r1_results_are_parsed(server: ThreadingHTTPServer) -> None:
    with _client(server, "/retrieve") as r:
        results = r.search(["Vorn Kadel", "Teslin"], topk=2)
    assert [len(hits) for hits in results] == [2, 2]
    assert results[0][0] == Passage(text="Text about Vorn Kadel.", title="Vorn Kadel 0", score=1.0)
    assert results[1][1].score == 0.5


def test_results_without_scores(server: ThreadingHTTPServer) -> None:
    with _client(server, "/noscores") as r:
        (hits,) = r.search(["q"], topk=3)
    assert [h.title for h in hits] == ["q 0", "q 1", "q 2"] and all(h.score == 0 for h in hits)


def test_500_then_success_is_retried(server: ThreadingHTTPServer) -> None:
    with _client(server, "/flaky") as r:
        (hits,) = r.search(["q"], topk=1)
    assert hits[0].text == "Text about q." and server.hits["/flaky"] == 2


def test_slow_server_times_out_after_retries(server: ThreadingHTTPServer) -> None:
    before = server.hits["/slow"]
    start = time.perf_counter()
    with _client(server, "/slow") as r, pytest.raises(RetrieverError, match="deadline") as err:
        r.search(["q"], topk=1)
    assert err.value.reason == "deadline exceeded after 3 attempts"
    assert time.perf_counter() - start < 2.0
    time.sleep(0.05)
    assert server.hits["/slow"] - before == 3


def test_slow_server_becomes_an_error_observation(server: ThreadingHTTPServer) -> None:
    with _client(server, "/slow", retries=1) as r:
        obs = SearchTool(r, topk=3).run(["q", ""])
    assert obs[0].error and obs[0].text == "search failed: deadline exceeded after 2 attempts"
    assert not obs[1].error and "empty" in obs[1].text.lower()


@pytest.mark.parametrize("path", ["/badjson", "/wrongcount"])
def test_malformed_responses_are_retried_then_fail(server: ThreadingHTTPServer, path: str) -> None:
    before = server.hits[path]
    with _client(server, path) as r, pytest.raises(RetrieverError, match="malformed"):
        r.search(["q"], topk=1)
    assert server.hits[path] - before == 3


def test_client_errors_are_not_retried(server: ThreadingHTTPServer) -> None:
    before = server.hits["/bad400"]
    with _client(server, "/bad400") as r, pytest.raises(RetrieverError, match="http 400"):
        r.search(["q"], topk=1)
    assert server.hits["/bad400"] - before == 1


def test_connection_refused() -> None:
    with socket.socket() as s:  # a port that nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = HttpRetriever(f"http://127.0.0.1:{port}/retrieve", timeout_s=0.5, retries=1, backoff_s=0)
    obs = SearchTool(r).run_one("q")
    assert obs.error and obs.text.startswith("search failed: connection error")


class _TrickleServer:
    """A raw socket server that answers every request by trickling bytes (`mode`):

    headers: the status line and headers one byte at a time, never finishing them;
    body: complete headers, then a long body one byte at a time;
    until-close: the same without a Content-Length (the body ends when the socket does);
    large: a fast 4 KiB body (Content-Length declared, or chunked with `chunked=True`).
    Each read of the client sees a byte well within its per-read timeout, so only a
    total deadline stops it. `stop` ends every trickle (the test's cleanup)."""

    def __init__(self, mode: str, interval_s: float = 0.02, chunked: bool = False):
        self.mode, self.interval_s, self.chunked = mode, interval_s, chunked
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/retrieve"
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)  # the request (small: one POST)
                if self.mode == "large":
                    return self._send_large(conn)
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                if self.mode == "headers":
                    return self._trickle(conn, head + b"X-Pad: " + b"a" * 100_000)
                if self.mode == "until-close":  # no length: the body ends when the socket does
                    conn.sendall(head + b"Connection: close\r\n\r\n")
                else:
                    conn.sendall(head + b"Content-Length: 100000\r\n\r\n")
                self._trickle(conn, b'{"result": [[' + b" " * 100_000)
            except OSError:  # the client cut the connection: what a deadline does
                pass

    def _trickle(self, conn: socket.socket, data: bytes) -> None:
        for i in range(len(data)):
            if self.stop.wait(self.interval_s):
                return
            conn.sendall(data[i : i + 1])

    def _send_large(self, conn: socket.socket) -> None:
        body = json.dumps({"result": [[{"contents": "x" * 4096}]]}).encode()
        if self.chunked:
            head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            conn.sendall(head + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def _search_in_thread(retriever: HttpRetriever, wait_s: float) -> tuple[float, object]:
    """(seconds taken, the outcome: results or the exception) of one search, or fail
    when it has not returned after `wait_s` (a hang must fail the test, not block it)."""
    outcome: list[object] = []

    def search() -> None:
        try:
            outcome.append(retriever.search(["q"], topk=1))
        except Exception as exc:  # the outcome under test
            outcome.append(exc)

    start = time.monotonic()
    thread = threading.Thread(target=search, daemon=True)
    thread.start()
    thread.join(wait_s)
    assert not thread.is_alive(), f"search still running after {wait_s} s: no total deadline"
    return time.monotonic() - start, outcome[0]


@pytest.mark.parametrize("mode", ["headers", "body", "until-close"])
def test_trickling_server_hits_the_total_deadline(mode: str) -> None:
    server = _TrickleServer(mode)
    timeout_s, attempts = 0.5, 2
    try:
        retriever = HttpRetriever(
            server.url, timeout_s=timeout_s, retries=attempts - 1, backoff_s=0
        )
        taken, outcome = _search_in_thread(retriever, wait_s=30)
    finally:
        server.close()
    assert isinstance(outcome, RetrieverError), outcome
    assert outcome.reason == f"deadline exceeded after {attempts} attempts"
    assert taken < timeout_s * attempts + 5  # generous slack for a loaded machine
    assert server.connections == attempts


@pytest.mark.parametrize("chunked", [False, True])
def test_response_over_the_size_limit_is_retried_then_fails(chunked: bool) -> None:
    server = _TrickleServer("large", chunked=chunked)
    try:
        retriever = HttpRetriever(
            server.url, timeout_s=10, retries=1, backoff_s=0, max_response_bytes=1024
        )
        _, outcome = _search_in_thread(retriever, wait_s=30)
    finally:
        server.close()
    assert isinstance(outcome, RetrieverError), outcome
    assert outcome.reason == "response too large after 2 attempts"
    assert server.connections == 2


def test_responses_within_the_size_limit_pass(server: ThreadingHTTPServer) -> None:
    with _client(server, "/retrieve", max_response_bytes=4096) as r:
        (hits,) = r.search(["q"], topk=2)
    assert len(hits) == 2
