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
    with _client(server, "/slow") as r, pytest.raises(RetrieverError, match="timeout") as err:
        r.search(["q"], topk=1)
    assert err.value.reason == "timeout after 3 attempts"
    assert time.perf_counter() - start < 2.0
    time.sleep(0.05)
    assert server.hits["/slow"] - before == 3


def test_slow_server_becomes_an_error_observation(server: ThreadingHTTPServer) -> None:
    with _client(server, "/slow", retries=1) as r:
        obs = SearchTool(r, topk=3).run(["q", ""])
    assert obs[0].error and obs[0].text == "search failed: timeout after 2 attempts"
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
