"""`make_search_tool`: the search tool an `EnvConfig` describes (kept apart from
`tools.py`, which the synthetic world imports, so that no import cycle runs through it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from a2tgpo.config import EnvConfig
from a2tgpo.envs.bm25 import BM25Retriever
from a2tgpo.envs.retrievers import HttpRetriever, Passage, Retriever, load_passages_jsonl
from a2tgpo.envs.synthetic import SyntheticWorld
from a2tgpo.envs.tools import SearchTool


def make_search_tool(
    env: EnvConfig, cache_dir: str | Path | None = None, corpus: Sequence[Passage] | None = None
) -> SearchTool:
    """The search tool an EnvConfig describes.

    synthetic: BM25 over the corpus of `SyntheticWorld.from_config(env)` (world,
    seed, size, hops); search_qa + bm25: BM25 over `corpus` (or `env.corpus` jsonl);
    http: a Search-R1 server at `env.retriever_url`.
    """
    retriever: Retriever
    if env.kind == "synthetic":
        world = SyntheticWorld.from_config(env)
        retriever = BM25Retriever(world.corpus, cache_dir=cache_dir)
    elif env.retriever == "http":
        if not env.retriever_url:
            raise ValueError("env.retriever='http' needs env.retriever_url")
        retriever = HttpRetriever(
            env.retriever_url,
            env.retriever_timeout_s,
            env.retriever_retries,
            max_response_bytes=env.retriever_max_response_bytes,
        )
    else:
        if corpus is None:
            if not env.corpus:
                raise ValueError("env.retriever='bm25' on search_qa needs env.corpus (a jsonl)")
            corpus = load_passages_jsonl(env.corpus)
        retriever = BM25Retriever(corpus, cache_dir=cache_dir)
    return SearchTool(retriever, topk=env.topk)
