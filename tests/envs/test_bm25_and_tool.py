"""BM25Retriever (ranking, on-disk cache) and SearchTool (formatting, never raising)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a2tgpo.config import EnvConfig
from a2tgpo.envs.bm25 import BM25Retriever, tokenize
from a2tgpo.envs.retrievers import Passage, RetrieverError, load_passages_jsonl
from a2tgpo.envs.search import make_search_tool
from a2tgpo.envs.tools import NO_RESULTS_TEXT, SearchTool, format_passages

CORPUS = [
    Passage("Vorn Kadel was born in Teslin.", title="Vorn Kadel"),
    Passage("Teslin is a city in Marovia.", title="Teslin"),
    Passage("Mira Sol works for Brimex.", title="Mira Sol"),
    "Brimex\nBrimex was founded by Vorn Kadel.",  # Search-R1 contents: title line, text
]


def _big_corpus(n: int) -> list[Passage]:
    return [Passage(f"item {i} mentions w{i % 997} and w{i * 7 % 1009} plus filler words here",
                    title=f"Item {i}") for i in range(n)]  # fmt: skip


def test_tokenize_drops_stopwords_and_case() -> None:
    assert tokenize("Vorn Kadel was born in the city of Teslin.") == [
        "vorn", "kadel", "born", "city", "teslin"
    ]  # fmt: skip


def test_ranking_prefers_the_titled_subject() -> None:
    r = BM25Retriever(CORPUS)
    (hits,) = r.search(["Vorn Kadel"], topk=3)
    assert [h.title for h in hits] == ["Vorn Kadel", "Brimex"]  # only passages sharing a token
    assert hits[0].score > hits[1].score > 0
    teslin, unknown, empty = r.search(["Teslin", "zzz unknown", ""], topk=1)
    assert [h.text for h in teslin] == ["Teslin is a city in Marovia."]
    assert unknown == [] and empty == []


def test_empty_corpus_is_an_error() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        BM25Retriever([])


def test_second_build_loads_from_cache_and_is_faster(tmp_path: Path) -> None:
    corpus = _big_corpus(8000)
    start = time.perf_counter()
    built = BM25Retriever(corpus, cache_dir=tmp_path)
    t_build = time.perf_counter() - start
    start = time.perf_counter()
    loaded = BM25Retriever(corpus, cache_dir=tmp_path)
    t_load = time.perf_counter() - start
    assert not built.loaded_from_cache and loaded.loaded_from_cache
    assert t_load < 0.7 * t_build, (t_load, t_build)
    queries = ["w5 w12", "item 77", "filler"]
    assert loaded.search(queries, 5) == built.search(queries, 5)
    assert [p.name for p in tmp_path.iterdir()] == [built.cache_path.name]  # no temp left over


def test_cache_key_depends_on_corpus_and_params(tmp_path: Path) -> None:
    a = BM25Retriever(CORPUS, cache_dir=tmp_path)
    b = BM25Retriever(CORPUS[:3], cache_dir=tmp_path)
    c = BM25Retriever(CORPUS, cache_dir=tmp_path, k1=1.2)
    assert len({a.cache_path, b.cache_path, c.cache_path}) == 3
    assert not (b.loaded_from_cache or c.loaded_from_cache)


@pytest.mark.parametrize("damage", ["no_marker", "truncated_array", "garbage_marker"])
def test_corrupt_cache_is_rebuilt(tmp_path: Path, damage: str, caplog) -> None:
    first = BM25Retriever(CORPUS, cache_dir=tmp_path)
    path = first.cache_path
    if damage == "no_marker":  # what an interrupted writer without the rename would leave
        (path / "a2tgpo-bm25.json").unlink()
    elif damage == "truncated_array":
        (path / "data.csc.index.npy").write_bytes(b"\x93NUMPY")
    else:
        (path / "a2tgpo-bm25.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="a2tgpo.envs.bm25"):
        again = BM25Retriever(CORPUS, cache_dir=tmp_path)
    assert f"bm25 index cache {path} cannot be read" in caplog.text
    assert not again.loaded_from_cache
    assert again.search(["Teslin"], 1) == first.search(["Teslin"], 1)
    assert json.loads((path / "a2tgpo-bm25.json").read_text())["key"] == first.key
    assert BM25Retriever(CORPUS, cache_dir=tmp_path).loaded_from_cache  # repaired


def test_an_unwritable_cache_warns_and_still_serves(tmp_path: Path, caplog) -> None:
    blocker = tmp_path / "a-file"  # a cache dir under a regular file: unwritable, even as root
    blocker.write_text("")
    with caplog.at_level(logging.WARNING, logger="a2tgpo.envs.bm25"):
        r = BM25Retriever(CORPUS, cache_dir=blocker / "cache")
    assert "cannot write the bm25 index cache" in caplog.text
    assert not r.loaded_from_cache
    assert [h.title for h in r.search(["Teslin"], 1)[0]] == ["Teslin"]
    assert blocker.read_text() == "" and list(tmp_path.iterdir()) == [blocker]


def test_a_bug_while_loading_the_cache_is_not_swallowed(tmp_path: Path, monkeypatch) -> None:
    import bm25s

    BM25Retriever(CORPUS, cache_dir=tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("bug in load")

    monkeypatch.setattr(bm25s.BM25, "load", broken)
    with pytest.raises(RuntimeError, match="bug in load"):
        BM25Retriever(CORPUS, cache_dir=tmp_path)


def test_format_passages_is_search_r1_style() -> None:
    text = format_passages([Passage("a b.", "T1"), Passage("c d.")])
    assert text == "Doc 1(Title: T1) a b.\nDoc 2 c d.\n"
    assert format_passages([]) == NO_RESULTS_TEXT


def test_search_tool_observations() -> None:
    tool = SearchTool(BM25Retriever(CORPUS), topk=2, max_chars=60)
    obs = tool.run(["Vorn Kadel", "  ", "qqq"])
    full = "Doc 1(Title: Vorn Kadel) Vorn Kadel was born in Teslin.\nDoc 2(Title: Brimex) "
    assert obs[0].text == full[:60]  # cut at max_chars, head kept
    assert len(obs[0].passages) == 2 and not obs[0].error
    assert obs[1].text == "Empty search query." and not obs[1].error
    assert obs[2].text == NO_RESULTS_TEXT and not obs[2].error


class _Broken:
    def __init__(self, exc: BaseException | None = None, result: object = None):
        self.exc, self.result = exc, result

    def search(self, queries: list[str], topk: int) -> list[list[Passage]]:
        if self.exc:
            raise self.exc
        return self.result  # type: ignore[return-value]


@pytest.mark.parametrize(
    "retriever, text",
    [
        (_Broken(RetrieverError("http 503 after 4 tries")), "search failed: http 503 after 4 tries"),
        (_Broken(TimeoutError()), "search failed: timeout"),
        (_Broken(KeyError("boom")), "search failed: KeyError: 'boom'"),
        (_Broken(result=[[]]), "search failed: retriever returned a wrong number of results"),
        (_Broken(result=None), "search failed: retriever returned a wrong number of results"),
    ],
)  # fmt: skip
def test_search_tool_never_raises(retriever: _Broken, text: str) -> None:
    obs = SearchTool(retriever).run(["a", "b"])
    assert [o.text for o in obs] == [text, text] and all(o.error for o in obs)


_FUZZ_TOOL = SearchTool(BM25Retriever(CORPUS), topk=3)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.text(), st.none(), st.integers()), max_size=5))
def test_search_tool_fuzz(queries: list) -> None:
    obs = _FUZZ_TOOL.run(queries)
    assert len(obs) == len(queries) and all(isinstance(o.text, str) for o in obs)


def test_make_search_tool(tmp_path: Path) -> None:
    corpus_file = tmp_path / "corpus.jsonl"
    corpus_file.write_text(
        '{"contents": "Teslin\\nTeslin is a city."}\n\n{"title": "X", "text": "y"}\n'
    )
    assert load_passages_jsonl(corpus_file) == [
        Passage("Teslin is a city.", "Teslin"),
        Passage("y", "X"),
    ]
    tool = make_search_tool(EnvConfig(kind="search_qa", corpus=str(corpus_file)), tmp_path / "c")
    assert tool.run_one("Teslin").passages[0].title == "Teslin"
    synthetic = make_search_tool(EnvConfig(num_entities=8), cache_dir=None)
    assert synthetic.topk == 3 and len(synthetic.retriever.passages) == 26
    with pytest.raises(ValueError, match="retriever_url"):
        make_search_tool(EnvConfig(kind="search_qa", retriever="http"))
