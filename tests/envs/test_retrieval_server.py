"""`a2tgpo serve-retriever`: the real server in a subprocess on 127.0.0.1, spoken to by the
project's HttpRetriever and by plain HTTP; request validation and row mapping in-process."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from a2tgpo.envs.bm25 import BM25Retriever
from a2tgpo.envs.retrieval_server import (
    Limits,
    RequestError,
    SearchIndex,
    load_corpus,
    parse_request,
)
from a2tgpo.envs.retrievers import HttpRetriever, RetrieverError, load_passages_jsonl
from a2tgpo.envs.served_retriever import ServedRetriever, ServerStartError

RECORDS = [
    {"id": "doc-0", "contents": '"Aurora Borealis"\nThe aurora is a light display in polar skies.'},
    {"id": "doc-1", "contents": "Mount Everest\nEverest is the highest mountain above sea level."},
    {"title": "Python (language)", "text": "Python is a programming language by Guido."},
    {"id": "doc-3", "contents": "Marie Curie\nCurie won Nobel prizes in physics and chemistry."},
    {"id": "doc-4", "contents": "Nile\nThe Nile is a long river flowing north through Africa."},
    {"id": "doc-5", "contents": "Amazon River\nThe Amazon river carries the most water."},
    {"id": "doc-6", "contents": "Kilimanjaro\nKilimanjaro is the highest mountain in Africa."},
    {"id": "doc-7", "contents": "Mount Everest\nEverest is the highest mountain above sea level."},
]
QUERIES = ["highest mountain", "Nobel prize chemistry", "river in Africa", "aurora", "zebra"]
# Small limits, so the tests can cross each of them cheaply.
LIMITS = Limits(topk_default=2, topk_max=5, max_queries=8, max_query_chars=200, max_body_bytes=4096)
START_TIMEOUT_S = 60.0


def write_corpus(folder: Path) -> Path:
    path = folder / "passages.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------- the real server


class Server(ServedRetriever):
    """The server with the small limits, and a raw POST for the shape tests."""

    def __init__(self, corpus: Path, cache: Path, log: Path):
        limits = ["--topk-default", str(LIMITS.topk_default), "--topk-max", str(LIMITS.topk_max)]
        limits += ["--max-queries", str(LIMITS.max_queries)]
        limits += ["--max-query-chars", str(LIMITS.max_query_chars)]
        limits += ["--max-body-bytes", str(LIMITS.max_body_bytes)]
        super().__init__(corpus, log, cache_dir=cache, extra_args=limits, verbose=True,
                         start_timeout_s=START_TIMEOUT_S)  # fmt: skip
        self.corpus, self.cache = corpus, cache

    def post(self, body: object | bytes, **kw: object) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        with httpx.Client(trust_env=False, timeout=30) as client:
            return client.post(f"{self.url}/retrieve", content=content, **kw)


def start_server(corpus: Path, cache: Path, log: Path) -> Server:
    """`a2tgpo -v serve-retriever` through the console entry, once /health answers."""
    server = Server(corpus, cache, log)
    try:
        server.start()
    except ServerStartError as e:
        pytest.fail(str(e))
    return server


def stop_server(server: Server) -> int:
    return server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("retriever")
    srv = start_server(write_corpus(folder), folder / "cache", folder / "server.log")
    yield srv
    stop_server(srv)
    print(f"--- server log ({srv.log}) ---\n{srv.log.read_text()}")  # shown on failure


def test_http_retriever_gets_what_bm25_ranks(server: Server):
    expected = BM25Retriever(load_passages_jsonl(server.corpus)).search(QUERIES, 3)
    with HttpRetriever(f"{server.url}/retrieve", timeout_s=30, retries=0) as client:
        got = client.search(QUERIES, 3)
    assert got == expected  # titles, texts and scores, in order
    mountain, curie, river, aurora, zebra = got
    assert [p.title for p in mountain] == ["Kilimanjaro", "Mount Everest", "Mount Everest"]
    assert curie[0].title == "Marie Curie" and curie[0].score > 0
    assert {p.title for p in river[:2]} == {"Nile", "Amazon River"}
    assert aurora[0].title == "Aurora Borealis"  # quotes of Search-R1 titles stripped
    assert aurora[0].text.startswith("The aurora is")
    assert zebra == []  # no passage shares a word with it
    with HttpRetriever(f"{server.url}/retrieve", retries=0, return_scores=False) as client:
        bare = client.search(QUERIES, 3)
    assert [[(p.title, p.text) for p in hits] for hits in bare] == [
        [(p.title, p.text) for p in hits] for hits in expected
    ]


def test_search_r1_response_shape(server: Server):
    body = {"queries": ["highest mountain", "python language", "zebra"], "topk": 3}
    scored = server.post(body | {"return_scores": True})
    assert scored.status_code == 200 and scored.headers["content-type"] == "application/json"
    result = scored.json()["result"]
    assert list(scored.json()) == ["result"] and len(result) == 3
    assert [sorted(hit) for hit in result[0]] == [["document", "score"]] * 3
    assert [hit["document"]["id"] for hit in result[0]] == ["doc-6", "doc-1", "doc-7"]
    assert all(isinstance(hit["score"], float) for hit in result[0])
    assert result[0][0]["score"] >= result[0][1]["score"] == result[0][2]["score"]
    # A record without id: its row number; {"title", "text"}: Search-R1 `contents`.
    assert result[1] == [
        {
            "document": {"id": "2", "contents": "Python (language)\n" + RECORDS[2]["text"]},
            "score": result[1][0]["score"],
        }
    ]
    assert result[2] == []
    bare = server.post(body).json()  # return_scores defaults to false, as in Search-R1
    assert bare == {"result": [[hit["document"] for hit in hits] for hits in result]}
    assert server.post({"queries": ["aurora"], "return_scores": False}).json() == {
        "result": [[{"id": "doc-0", "contents": RECORDS[0]["contents"]}]]  # verbatim
    }


def test_topk_defaults_and_empty_batches(server: Server):
    hits = server.post({"queries": ["highest mountain"]}).json()["result"][0]
    assert len(hits) == LIMITS.topk_default
    assert (
        len(server.post({"queries": ["highest mountain"], "topk": None}).json()["result"][0]) == 2
    )
    assert server.post({"queries": []}).json() == {"result": []}


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"topk": 3}, 422, "'queries'"),
        ({"queries": "aurora"}, 422, "'queries'"),
        ({"queries": ["aurora", 3]}, 422, "'queries'"),
        ({"queries": ["q"] * (LIMITS.max_queries + 1)}, 422, "over the limit"),
        ({"queries": ["q" * (LIMITS.max_query_chars + 1)]}, 422, "chars"),
        ({"queries": ["aurora"], "topk": 0}, 422, "'topk'"),
        ({"queries": ["aurora"], "topk": "3"}, 422, "'topk'"),
        ({"queries": ["aurora"], "topk": LIMITS.topk_max + 1}, 422, "over the limit"),
        ({"queries": ["aurora"], "return_scores": "yes"}, 422, "'return_scores'"),
        (b'{"queries": ["aurora"', 400, "not JSON"),
        (b"\xff\xfe\x00", 400, "not JSON"),
        ([{"queries": ["aurora"]}], 400, "JSON object"),
        ({"queries": ["a " * LIMITS.max_body_bytes]}, 413, "body over"),
    ],
)
def test_bad_requests_get_4xx_json(server: Server, body: object, status: int, detail: str):
    response = server.post(body)
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]


def test_oversized_chunked_body_is_refused(server: Server):
    def chunks() -> Iterator[bytes]:  # no Content-Length: the server counts as it reads
        yield b'{"queries": ["'
        for _ in range(LIMITS.max_body_bytes // 1024 + 1):
            yield b"a" * 1024
        yield b'"]}'

    with httpx.Client(trust_env=False, timeout=30) as client:
        response = client.post(f"{server.url}/retrieve", content=chunks())
    assert response.status_code == 413


def test_client_does_not_retry_a_refused_request(server: Server):
    with HttpRetriever(f"{server.url}/retrieve", retries=3, backoff_s=5) as client:
        start = time.monotonic()
        with pytest.raises(RetrieverError, match="http 422"):
            client.search(["aurora"], LIMITS.topk_max + 1)
    assert time.monotonic() - start < 4  # no backoff: a 4xx is final


def test_health_and_unknown_routes(server: Server):
    health = httpx.get(f"{server.url}/health", trust_env=False).json()
    assert health["status"] == "ok" and health["passages"] == len(RECORDS)
    assert health["index"]["kind"] == "bm25s" and health["index"]["loaded_from_cache"] is False
    assert health["index"]["cache_path"].startswith(str(server.cache))
    assert health["limits"]["topk_max"] == LIMITS.topk_max
    assert httpx.get(f"{server.url}/retrieve", trust_env=False).status_code == 405
    assert httpx.get(f"{server.url}/nowhere", trust_env=False).status_code == 404


def test_restart_loads_the_cached_index_and_sigterm_exits_cleanly(server: Server, tmp_path):
    again = start_server(server.corpus, server.cache, tmp_path / "again.log")
    try:
        health = httpx.get(f"{again.url}/health", trust_env=False).json()
        assert health["index"]["loaded_from_cache"] is True
    finally:
        code = stop_server(again)
    # uvicorn shuts down (in-flight requests finish), then re-raises the signal it caught.
    assert code in (0, -signal.SIGTERM), again.log.read_text()
    assert "Finished server process" in again.log.read_text()


# ---------------------------------------------------------------- in-process


def test_parse_request_accepts_search_r1_requests():
    req = parse_request(b'{"queries": ["a", "b"], "topk": 5, "return_scores": true}', LIMITS)
    assert (req.queries, req.topk, req.return_scores) == (["a", "b"], 5, True)
    req = parse_request(b'{"queries": ["a"], "extra": 1}', LIMITS)
    assert (req.topk, req.return_scores) == (LIMITS.topk_default, False)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"[" * 100_000, 400),  # deeper than the JSON parser's stack
        (b'{"queries": ["a"], "topk": true}', 422),
        (b'{"queries": ["a"], "topk": 2.0}', 422),
        (b'{"queries": null}', 422),
        (b"x" * 200_001, 413),
    ],
)
def test_parse_request_refuses(body: bytes, status: int):
    with pytest.raises(RequestError) as info:
        parse_request(body, Limits(max_body_bytes=200_000))
    assert info.value.status == status


def test_index_maps_hits_to_rows_and_caches(tmp_path: Path):
    corpus = load_corpus(write_corpus(tmp_path))
    assert corpus.document(2) == {"id": "2", "contents": "Python (language)\n" + RECORDS[2]["text"]}
    assert corpus.contents[1] is None  # reproducible from the passage: not kept twice
    first = SearchIndex(corpus, tmp_path / "cache")
    assert [row for row, _ in first.search(["everest"], 5)[0]] == [1, 7]  # duplicates: both
    assert not first.info()["loaded_from_cache"]
    second = SearchIndex(load_corpus(write_corpus(tmp_path)), tmp_path / "cache")
    assert second.info()["loaded_from_cache"] and second.info()["key"] == first.info()["key"]
    assert second.search(QUERIES, 3) == first.search(QUERIES, 3)


def test_load_corpus_says_where_a_bad_line_is(tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"contents": "ok"}\n{"id": 1}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        load_corpus(path)
    path.write_text("\n")
    with pytest.raises(ValueError, match="no passages"):
        load_corpus(path)
