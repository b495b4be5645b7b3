"""A retrieval server that speaks Search-R1's API, answered from a bm25s index.

    a2tgpo serve-retriever --corpus passages.jsonl [--host 127.0.0.1] [--port 8000]
        [--cache-dir DIR] [--topk-default 3] [--topk-max 100] [--max-queries 4096]
        [--max-query-chars 4096] [--max-body-bytes 8388608]
    a2tgpo -v serve-retriever ...     # also logs one line per request (DEBUG)

Point Search-R1 or IGPO at `http://HOST:PORT/retrieve` (their `retriever.url`), or this
project: `--set env.retriever=http --set env.retriever_url=http://HOST:PORT/retrieve`.
On a cluster it runs as the `retriever` Deployment (infra/k8s/retriever.yaml).

    POST /retrieve  {"queries": ["...", ...], "topk": 3, "return_scores": true}
      -> {"result": [[{"document": {"id": "7", "contents": "Title\\ntext"}, "score": 4.2},
                      ...], ...]}
    with "return_scores": false (the default, as in Search-R1) the bare documents:
      -> {"result": [[{"id": "7", "contents": "Title\\ntext"}, ...], ...]}
    GET /health -> {"status": "ok", "passages": N, "index": {...}, "limits": {...}}

One list per query, best first, at most `topk` long: fewer when fewer passages share a
word with the query. `topk` missing or null means --topk-default. A document is the
corpus row as Search-R1's dense server returns it: the record's `id` (else its 0-based
row number, as a string) and its `contents` verbatim ({"title", "text"} records become
"title\\ntext"). Errors are JSON `{"detail": "..."}`: 400 for a body that is not a JSON
object, 413 for one over --max-body-bytes, 422 for a field of the wrong type or out of
bounds (more than --max-queries queries, a query over --max-query-chars, topk < 1 or over
--topk-max).

The index is the one `env.retriever=bm25` uses (`a2tgpo.envs.bm25.BM25Retriever`, so both
rank alike), built before the port opens and cached under --cache-dir (default
`local_cache_dir()`, shared with training runs) by a hash of the corpus: a restart loads it.

Why FastAPI on uvicorn rather than the stdlib's http.server (which the docs call unfit for
production): uvicorn parses HTTP robustly, bounds connections (`limit_concurrency`, 503
beyond), times out idle keep-alives and shuts down gracefully on SIGTERM, as a Deployment
needs; both are in the lock already (Prefect needs them). Search runs in a worker thread,
so /health answers during a long batch.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# At module level, not in create_app: FastAPI resolves the endpoints' (string, by the
# __future__ import) annotations in this module's globals.
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from a2tgpo.envs.retrievers import Passage, passage_from_record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """Bounds on one /retrieve request. Search-R1 and IGPO send every query of a rollout
    step in one request, hence the generous query count."""

    topk_default: int = 3
    topk_max: int = 100
    max_queries: int = 4096
    max_query_chars: int = 4096
    max_body_bytes: int = 8 << 20


class RequestError(ValueError):
    """A request the server refuses: `status` (4xx) and a `detail` for the client."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class RetrieveRequest:
    queries: list[str]
    topk: int
    return_scores: bool


def parse_request(body: bytes, limits: Limits) -> RetrieveRequest:
    """A validated /retrieve request, or RequestError with the status to answer."""
    if len(body) > limits.max_body_bytes:
        raise RequestError(413, f"body over {limits.max_body_bytes} bytes")
    try:
        data = json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RequestError(400, f"body is not JSON: {exc}"[:200]) from None
    except RecursionError:  # `[[[[...` nested deeper than the parser's stack
        raise RequestError(400, "body is not JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise RequestError(400, "body must be a JSON object")
    queries = data.get("queries")
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise RequestError(422, "'queries' must be a list of strings")
    if len(queries) > limits.max_queries:
        raise RequestError(422, f"{len(queries)} queries, over the limit {limits.max_queries}")
    longest = max((len(q) for q in queries), default=0)
    if longest > limits.max_query_chars:
        raise RequestError(422, f"a query of {longest} chars, over {limits.max_query_chars}")
    topk = data.get("topk")
    if topk is None:
        topk = limits.topk_default
    # bool is an int subclass: `"topk": true` is a client bug, not topk=1.
    if not isinstance(topk, int) or isinstance(topk, bool) or topk < 1:
        raise RequestError(422, "'topk' must be an integer >= 1")
    if topk > limits.topk_max:
        raise RequestError(422, f"topk {topk} over the limit {limits.topk_max}")
    return_scores = data.get("return_scores", False)
    if not isinstance(return_scores, bool):
        raise RequestError(422, "'return_scores' must be true or false")
    return RetrieveRequest(queries, topk, return_scores)


@dataclass
class Corpus:
    """Passages with what Search-R1 returns for them: `ids[i]` (None: use the row number)
    and `contents[i]` (None: `passages[i].contents` reproduces it, so none is kept)."""

    passages: list[Passage]
    ids: list[Any]
    contents: list[str | None]

    def document(self, row: int) -> dict[str, Any]:
        doc_id = self.ids[row]
        contents = self.contents[row]
        return {
            "id": str(row) if doc_id is None else doc_id,
            "contents": self.passages[row].contents if contents is None else contents,
        }


def load_corpus(path: str | Path) -> Corpus:
    """A jsonl corpus ({"id"?, "contents"} or {"id"?, "title", "text"} per line)."""
    start = time.perf_counter()
    corpus = Corpus([], [], [])
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                passage = passage_from_record(record)
            except ValueError as exc:
                raise ValueError(f"{path}:{line_no}: {exc}") from exc
            raw = record.get("contents") if isinstance(record, dict) else record
            corpus.passages.append(passage)
            corpus.ids.append(record.get("id") if isinstance(record, dict) else None)
            keep = isinstance(raw, str) and raw != passage.contents
            corpus.contents.append(raw if keep else None)
    if not corpus.passages:
        raise ValueError(f"{path}: no passages")
    elapsed = time.perf_counter() - start
    log.info("corpus %s: %d passages (%.1f s)", path, len(corpus.passages), elapsed)
    return corpus


class SearchIndex:
    """BM25Retriever over a Corpus, its hits mapped back to corpus rows (for id, contents).

    BM25Retriever returns passages, not row numbers, so rows are found by (title, text).
    Identical passages score identically and BM25Retriever breaks ties by row, so the
    j-th copy of a passage in one query's hits is its j-th row.
    """

    def __init__(self, corpus: Corpus, cache_dir: str | Path | None):
        from a2tgpo.envs.bm25 import BM25Retriever  # imports bm25s (numba): only here

        start = time.perf_counter()
        self.corpus = corpus
        self.bm25 = BM25Retriever(corpus.passages, cache_dir=cache_dir)
        self.ready_s = time.perf_counter() - start
        self._rows: dict[tuple[str, str], int | list[int]] = {}
        for row, p in enumerate(corpus.passages):
            seen = self._rows.setdefault((p.title, p.text), row)
            if seen != row:  # a duplicate: keep every row, in corpus order
                self._rows[(p.title, p.text)] = [*_as_list(seen), row]

    def search(self, queries: list[str], topk: int) -> list[list[tuple[int, float]]]:
        """(row, score) of the top-k passages of each query."""
        return [self._rows_of(hits) for hits in self.bm25.search(queries, topk)]

    def _rows_of(self, hits: Iterable[Passage]) -> list[tuple[int, float]]:
        copies: dict[tuple[str, str], int] = {}
        out = []
        for p in hits:
            key = (p.title, p.text)
            rows = _as_list(self._rows[key])
            out.append((rows[copies.get(key, 0)], p.score))
            copies[key] = copies.get(key, 0) + 1
        return out

    def info(self) -> dict[str, Any]:
        cache = self.bm25.cache_path
        return {
            "kind": "bm25s",
            "key": self.bm25.key[:20],
            "params": self.bm25.params,
            "cache_path": str(cache) if cache else None,
            "loaded_from_cache": self.bm25.loaded_from_cache,
            "ready_s": round(self.ready_s, 3),
        }

    def respond(self, request: RetrieveRequest) -> dict[str, Any]:
        """Search-R1's response body for a validated request."""
        result = []
        for hits in self.search(request.queries, request.topk):
            docs = [(self.corpus.document(row), score) for row, score in hits]
            if request.return_scores:
                result.append([{"document": doc, "score": score} for doc, score in docs])
            else:
                result.append([doc for doc, _ in docs])
        return {"result": result}


def _as_list(rows: int | list[int]) -> list[int]:
    return rows if isinstance(rows, list) else [rows]


def create_app(index: SearchIndex, limits: Limits) -> FastAPI:
    """The FastAPI app: POST /retrieve, GET /health."""
    app = FastAPI(title="a2tgpo retriever (Search-R1 API)")

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "passages": len(index.corpus.passages),
            "index": index.info(),
            "limits": asdict(limits),
        }

    @app.post("/retrieve")
    async def retrieve(request: Request) -> JSONResponse:
        start = time.perf_counter()
        try:
            body = await _read_body(request, limits.max_body_bytes)
            parsed = parse_request(body, limits)
        except RequestError as exc:
            log.debug("retrieve: %d %s", exc.status, exc.detail)
            return JSONResponse({"detail": exc.detail}, status_code=exc.status)
        # BM25 is CPU-bound: in a worker thread, so the event loop keeps serving /health.
        response = await run_in_threadpool(index.respond, parsed)
        log.debug(
            "retrieve: %d queries, topk %d, %.1f ms",
            len(parsed.queries),
            parsed.topk,
            1000 * (time.perf_counter() - start),
        )
        return JSONResponse(response)

    return app


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused (413) as soon as it is known to exceed max_bytes: by its
    Content-Length, or while streaming one sent without (chunked)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise RequestError(413, f"body over {max_bytes} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise RequestError(413, f"body over {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def serve(
    corpus: Corpus,
    host: str,
    port: int,
    cache_dir: str | Path | None,
    limits: Limits,
    max_connections: int = 256,
) -> None:
    """Build (or load) the index, then serve until SIGINT/SIGTERM (graceful shutdown)."""
    import uvicorn

    index = SearchIndex(corpus, cache_dir)
    how = "loaded from cache" if index.bm25.loaded_from_cache else "built"
    log.info("bm25 index %s in %.1f s (cache: %s)", how, index.ready_s, index.bm25.cache_path)
    log.info("starting the Search-R1 API on http://%s:%d/retrieve (and /health)", host, port)
    config = uvicorn.Config(
        create_app(index, limits),
        host=host,
        port=port,
        log_config=None,  # keep the CLI's logging set-up
        access_log=False,  # a line per request at INFO is too much; ours is at DEBUG
        limit_concurrency=max_connections,
        lifespan="off",
    )
    uvicorn.Server(config).run()


__all__ = [
    "Corpus",
    "Limits",
    "RequestError",
    "RetrieveRequest",
    "SearchIndex",
    "create_app",
    "load_corpus",
    "parse_request",
    "serve",
]
