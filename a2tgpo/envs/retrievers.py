"""Retrievers: the search backends behind the agent's `<search>` tool.

`Retriever` is the protocol the tool calls: a batch of queries in, the top-k
passages of each out. Two implementations:

- `BM25Retriever` (in `a2tgpo.envs.bm25`, which imports this module): bm25s over an
  in-memory list of passages, its index cached on disk by a hash of the corpus.
- `HttpRetriever`: a Search-R1 retrieval server (`POST /retrieve` with
  `{"queries", "topk", "return_scores"}`), with a total deadline per request, a
  response-size limit and retries.

Passages follow Search-R1's convention: a document's `contents` holds the title
on its first line and the text after it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpx

# Far above any top-k answer, far below a memory problem.
DEFAULT_MAX_RESPONSE_BYTES = 16 * 2**20


@dataclass(frozen=True)
class Passage:
    """One retrieved (or retrievable) passage."""

    text: str
    title: str = ""
    score: float = 0.0

    @property
    def contents(self) -> str:
        """Search-R1 `contents`: title on the first line, then the text."""
        return f"{self.title}\n{self.text}" if self.title else self.text


class RetrieverError(RuntimeError):
    """A retrieval that failed for good; `reason` is short enough for an observation."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@runtime_checkable
class Retriever(Protocol):
    """Anything that maps a batch of queries to the top-k passages of each."""

    def search(self, queries: list[str], topk: int) -> list[list[Passage]]: ...


def passage_from_contents(contents: str, score: float = 0.0) -> Passage:
    """Split Search-R1 `contents` ("Title\\ntext"); a single line is text without a title."""
    title, sep, text = contents.partition("\n")
    if not sep:
        return Passage(text=contents.strip(), score=score)
    return Passage(text=text.strip(), title=title.strip().strip('"'), score=score)


def passage_from_record(record: Any, score: float | None = None) -> Passage:
    """A Passage from a corpus or server record: {"contents"}, {"title","text"}, or a string."""
    if isinstance(record, Passage):
        return record
    if isinstance(record, str):
        return passage_from_contents(record, score or 0.0)
    if not isinstance(record, dict):
        raise ValueError(f"not a passage record: {type(record).__name__}")
    if score is None:
        score = record.get("score", 0.0)
    if isinstance(record.get("document"), dict):  # Search-R1 {"document": {...}, "score": s}
        return passage_from_record(record["document"], score)
    score = float(score) if isinstance(score, int | float) else 0.0
    if isinstance(record.get("contents"), str):
        return passage_from_contents(record["contents"], score)
    if isinstance(record.get("text"), str):
        return Passage(record["text"].strip(), str(record.get("title") or "").strip(), score)
    raise ValueError(f"passage record without 'contents' or 'text': keys {sorted(record)}")


def load_passages_jsonl(path: str | Path) -> list[Passage]:
    """A jsonl corpus, one record per line ({"contents": ...} or {"title", "text"})."""
    passages: list[Passage] = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                passages.append(passage_from_record(json.loads(line)))
            except ValueError as exc:
                raise ValueError(f"{path}:{line_no}: {exc}") from exc
    return passages


class HttpRetriever:
    """Client of a Search-R1-style retrieval server.

    Each request has a total deadline of `timeout_s` (connect, headers and body
    together: httpx's own timeouts bound each read, so a server trickling a byte at
    a time would otherwise hold the rollout forever) and reads at most
    `max_response_bytes` of body (decoded). Connection errors, a passed deadline
    ("deadline exceeded"), a body over the limit ("response too large"), 5xx answers
    and malformed JSON are retried `retries` times with exponential backoff
    (`backoff_s`, 2x, 4x, ...); then `RetrieverError` is raised with a short reason.
    Other 4xx answers are not retried: the request itself is wrong.
    """

    def __init__(
        self,
        url: str,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        return_scores: bool = True,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ):
        self.url = url
        self.timeout_s = float(timeout_s)
        self.retries = max(0, int(retries))
        self.backoff_s = float(backoff_s)
        self.return_scores = return_scores
        self.max_response_bytes = int(max_response_bytes)
        # No kept-alive connections: each request connects anew, so the deadline's
        # watchdog knows the one socket to cut (one connect per batched search).
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpRetriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def search(self, queries: list[str], topk: int) -> list[list[Passage]]:
        if not queries:
            return []
        payload = {"queries": list(queries), "topk": int(topk), "return_scores": self.return_scores}
        reason = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                return self._request(payload, len(queries))
            except _Retryable as exc:
                reason = exc.reason
        raise RetrieverError(f"{reason} after {self.retries + 1} attempts")

    def _request(self, payload: dict[str, Any], n_queries: int) -> list[list[Passage]]:
        with _Deadline(self.timeout_s) as deadline:
            try:
                body = self._post(payload, deadline)
            except httpx.TimeoutException as exc:  # a read or connect after the deadline
                raise _Retryable("deadline exceeded") from exc
            except httpx.TransportError as exc:
                if deadline.passed:  # the watchdog cut the socket
                    raise _Retryable("deadline exceeded") from exc
                raise _Retryable(f"connection error ({type(exc).__name__})") from exc
        try:
            return _parse_results(json.loads(body), n_queries)
        except (ValueError, TypeError, KeyError) as exc:  # JSONDecodeError is a ValueError
            raise _Retryable(f"malformed response ({exc})"[:200]) from exc

    def _post(self, payload: dict[str, Any], deadline: _Deadline) -> bytes:
        """The body of a 2xx answer (status errors raised before any body is read)."""
        extensions = {"trace": deadline.trace}
        with self._client.stream("POST", self.url, json=payload, extensions=extensions) as response:
            if response.status_code >= 500:
                raise _Retryable(f"http {response.status_code}")
            if response.status_code >= 400:
                raise RetrieverError(f"http {response.status_code}")
            return self._read_body(response, deadline)

    def _read_body(self, response: httpx.Response, deadline: _Deadline) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_response_bytes:
            raise _Retryable("response too large")
        chunks, size = [], 0
        for chunk in response.iter_bytes():  # decoded: a compressed bomb is cut too
            size += len(chunk)
            if size > self.max_response_bytes:
                raise _Retryable("response too large")
            if deadline.passed:
                raise _Retryable("deadline exceeded")
            chunks.append(chunk)
        if deadline.fired:  # a body read until close looks complete when the socket is cut
            raise _Retryable("deadline exceeded")
        return b"".join(chunks)


class _Deadline:
    """A watchdog that shuts the request's socket down when `seconds` have passed.

    A blocked read then returns at once (shutdown wakes it; close would not), and the
    request fails with a transport error that `passed` turns into "deadline exceeded".
    The socket comes from httpcore's `trace` extension (its connect event)."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds
        self.fired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True

    @property
    def passed(self) -> bool:
        return self.fired or time.monotonic() >= self.end

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if not event.endswith("connect_tcp.complete"):
            return
        sock = info["return_value"].get_extra_info("socket")
        with self._lock:
            self._sockets.append(sock)
            if self.fired:  # connected just as the time ran out
                _shutdown(sock)

    def _cut(self) -> None:
        with self._lock:
            self.fired = True
            for sock in self._sockets:
                _shutdown(sock)

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed: the request ended on its own
        sock.shutdown(socket.SHUT_RDWR)


class _Retryable(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _parse_results(body: Any, n_queries: int) -> list[list[Passage]]:
    """Search-R1's `{"result": [[{"document": {...}, "score": s}, ...], ...]}`, scores optional."""
    if not isinstance(body, dict) or not isinstance(body.get("result"), list):
        raise ValueError("no 'result' list")
    results = body["result"]
    if len(results) != n_queries:
        raise ValueError(f"{len(results)} result lists for {n_queries} queries")
    out: list[list[Passage]] = []
    for hits in results:
        if not isinstance(hits, list):
            raise ValueError("a result is not a list")
        out.append([passage_from_record(hit) for hit in hits])
    return out


def as_passages(items: Iterable[Passage | str | dict[str, Any]]) -> list[Passage]:
    """Normalize a corpus given as Passages, Search-R1 `contents` strings or records."""
    return [passage_from_record(item) for item in items]


__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "HttpRetriever",
    "Passage",
    "Retriever",
    "RetrieverError",
    "as_passages",
    "load_passages_jsonl",
    "passage_from_contents",
    "passage_from_record",
]
