"""BM25 retrieval over an in-memory corpus (bm25s), with an on-disk index cache.

Documents are indexed as title + text (as Search-R1 indexes `contents`), so a
passage titled by its subject ranks above passages that only mention it.
Tokens: lowercase `\\w+` runs minus bm25s' English stopwords; the same
function tokenizes queries, so a query copied from a passage matches it.

Cache: `{cache_dir}/bm25-{key}` where key hashes the corpus (titles and texts),
the BM25 parameters and the tokenizer version. The index is written to a temp
folder, a marker file is written last, and the folder is renamed into place,
so a reader sees a complete index or none; an index that fails to load (half
written by an older writer, corrupted, foreign) is rebuilt and replaced. A cache
that cannot be read or written costs only time, so it is a logged warning, never
an error; any other exception is a bug and propagates.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from a2tgpo.envs.retrievers import Passage, as_passages

# Bump when tokenization or the saved layout changes: old caches then miss.
_CACHE_VERSION = "a2tgpo-bm25-v1"
_MARKER = "a2tgpo-bm25.json"
_WORD = re.compile(r"\w+")
# What a missing, truncated, corrupt or unwritable cache raises (I/O, JSON, numpy load).
_CACHE_ERRORS = (OSError, ValueError, EOFError)

log = logging.getLogger(__name__)


@functools.cache
def _stopwords() -> frozenset[str]:
    # Imported on first use, not with this module: bm25s loads numba (llvmlite), and
    # a process that imports it at start-up breaks vLLM's workers (engines/vllm_engine).
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens without English stopwords (corpus and queries alike)."""
    stop = _stopwords()
    return [t for t in _WORD.findall(text.lower()) if t not in stop]


class BM25Retriever:
    """Top-k BM25 passages per query; only passages sharing a token with the query are returned.

    Ties are broken by corpus order, so results are deterministic.
    """

    def __init__(
        self,
        passages: Iterable[Passage | str | dict[str, Any]],
        cache_dir: str | Path | None = None,
        k1: float = 1.5,
        b: float = 0.75,
        method: str = "lucene",
    ):
        self.passages = as_passages(passages)
        if not self.passages:
            raise ValueError("BM25Retriever needs a non-empty corpus")
        self.params = {"k1": float(k1), "b": float(b), "method": method}
        self.key = self._cache_key()
        self.loaded_from_cache = False
        self.cache_path = Path(cache_dir) / f"bm25-{self.key[:20]}" if cache_dir else None
        index = self._load() if self.cache_path else None
        if index is None:
            index = self._build()
            if self.cache_path:
                self._save(index)
        else:
            self.loaded_from_cache = True
        self._index = index

    def _cache_key(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps([_CACHE_VERSION, self.params], sort_keys=True).encode())
        for p in self.passages:
            for field in (p.title, p.text):
                data = field.encode("utf-8", errors="surrogatepass")
                h.update(len(data).to_bytes(8, "little"))
                h.update(data)
        return h.hexdigest()

    def _build(self) -> Any:
        bm25s = _import_bm25s()
        index = bm25s.BM25(**self.params)
        docs = [tokenize(f"{p.title} {p.text}") for p in self.passages]
        index.index(docs, show_progress=False)
        return index

    def _load(self) -> Any:
        """The cached index; None when there is none or it cannot be used (then rebuilt)."""
        assert self.cache_path is not None
        if not os.path.exists(self.cache_path):
            return None  # first build for this corpus: a plain miss
        bm25s = _import_bm25s()
        try:
            meta = json.loads((self.cache_path / _MARKER).read_text())
            index = None
            if isinstance(meta, dict) and meta.get("key") == self.key:
                index = bm25s.BM25.load(str(self.cache_path), show_progress=False, mmap=False)
        except _CACHE_ERRORS as exc:
            log.warning(
                "bm25 index cache %s cannot be read (%s: %s); rebuilding it",
                self.cache_path,
                type(exc).__name__,
                exc,
            )
            return None
        num_docs = index.scores.get("num_docs") if index is not None else None
        if num_docs is None or int(num_docs) != len(self.passages):
            log.warning("bm25 index cache %s is not this corpus's; rebuilding it", self.cache_path)
            return None
        return index

    def _save(self, index: Any) -> None:
        """Write the index to the cache; a failure leaves it in memory only, with a warning."""
        assert self.cache_path is not None
        final = self.cache_path
        tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            index.save(str(tmp), show_progress=False)
            meta = {"key": self.key, "num_docs": len(self.passages), "params": self.params}
            (tmp / _MARKER).write_text(json.dumps(meta))  # last: its presence means complete
            if final.exists():
                shutil.rmtree(final, ignore_errors=True)  # we only get here if it failed to load
            try:
                os.rename(tmp, final)
            except OSError:
                if os.path.exists(final / _MARKER):  # never raises, unlike Path.exists
                    return  # another process renamed its complete index into place first
                raise
        except OSError as exc:
            log.warning(
                "cannot write the bm25 index cache %s (%s: %s); the index lives in memory "
                "only and is rebuilt next time",
                final,
                type(exc).__name__,
                exc,
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _top(self, query: str, topk: int) -> list[Passage]:
        ids = self._index.get_tokens_ids(tokenize(query))
        if not ids or topk <= 0:
            return []
        scores = np.asarray(self._index.get_scores_from_ids(ids), dtype=np.float64)
        k = min(topk, len(scores))
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        cand = np.flatnonzero((scores >= kth) & (scores > 0))
        # Sort candidates by score desc, then corpus index asc (deterministic ties).
        cand = cand[np.lexsort((cand, -scores[cand]))][:k]
        out = []
        for i in cand:
            p = self.passages[int(i)]
            out.append(Passage(text=p.text, title=p.title, score=float(scores[i])))
        return out

    def search(self, queries: list[str], topk: int) -> list[list[Passage]]:
        """The top-k passages of each query (fewer if fewer share a token with it)."""
        return [self._top(q, topk) for q in queries]


def _import_bm25s() -> Any:
    """bm25s, imported late (module docstring). It sets its logger to DEBUG on import,
    which would print its internals at any log level; NOTSET defers to the app's level."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.NOTSET)
    return bm25s
