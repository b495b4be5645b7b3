"""The search tool the agent loop calls: queries in, observation texts out, never an exception.

An observation's text is what goes between `<information>` and `</information>`
(see `prompting.wrap_observation`). Passages are formatted as Search-R1 does:

    Doc 1(Title: {title}) {text}
    Doc 2(Title: {title}) {text}

(an untitled passage is `Doc 1 {text}`). A failing retriever yields
"search failed: {reason}" with `error=True`, so the loop can record a tool error
and carry on or stop as it chooses; an empty query yields a plain notice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from a2tgpo.envs.parser import DEFAULT_MAX_QUERY_CHARS
from a2tgpo.envs.retrievers import (
    Passage,
    Retriever,
    RetrieverError,
)

EMPTY_QUERY_TEXT = "Empty search query."
NO_RESULTS_TEXT = "No results found."


@dataclass(frozen=True)
class Observation:
    """The tool's answer to one query. `error` marks a tool failure, not a bad query;
    `reason` is then its short cause (what the text says after "search failed: ")."""

    text: str
    passages: tuple[Passage, ...] = field(default=())
    error: bool = False
    reason: str = ""


def format_passages(passages: Sequence[Passage]) -> str:
    """Search-R1's passage listing: one `Doc i(Title: t) text` line per passage."""
    lines = []
    for i, p in enumerate(passages, 1):
        head = f"Doc {i}(Title: {p.title})" if p.title else f"Doc {i}"
        lines.append(f"{head} {p.text}")
    return "\n".join(lines) + "\n" if lines else NO_RESULTS_TEXT


class SearchTool:
    """Batch search with Search-R1 formatting; `run` never raises.

    `max_chars` caps each observation's text (head kept), `max_query_chars` each
    query; both protect the context budget from huge passages or queries.
    """

    def __init__(
        self,
        retriever: Retriever,
        topk: int = 3,
        max_chars: int = 2000,
        max_query_chars: int = DEFAULT_MAX_QUERY_CHARS,
    ):
        self.retriever = retriever
        self.topk = int(topk)
        self.max_chars = int(max_chars)
        self.max_query_chars = int(max_query_chars)

    def run(self, queries: Sequence[str]) -> list[Observation]:
        """One observation per query, in order."""
        cleaned = [self._clean(q) for q in queries]
        todo = [i for i, q in enumerate(cleaned) if q]
        results: dict[int, Observation] = {}
        if todo:
            for i, obs in zip(todo, self._search([cleaned[i] for i in todo]), strict=True):
                results[i] = obs
        return [results.get(i, Observation(EMPTY_QUERY_TEXT)) for i in range(len(cleaned))]

    def run_one(self, query: str) -> Observation:
        return self.run([query])[0]

    def _clean(self, query: object) -> str:
        if not isinstance(query, str):
            return ""
        query = query.encode("utf-8", errors="replace").decode("utf-8").replace("\x00", " ")
        return query.strip()[: self.max_query_chars].strip()

    def _search(self, queries: list[str]) -> list[Observation]:
        try:
            hits = self.retriever.search(queries, self.topk)
            if not isinstance(hits, list) or len(hits) != len(queries):
                raise RetrieverError("retriever returned a wrong number of results")
            return [self._observation(list(h)[: self.topk]) for h in hits]
        except RetrieverError as exc:
            return [self._failure(exc.reason) for _ in queries]
        except TimeoutError:
            return [self._failure("timeout") for _ in queries]
        except Exception as exc:  # any backend bug becomes an observation, not a dead rollout
            return [self._failure(f"{type(exc).__name__}: {exc}"[:200]) for _ in queries]

    def _observation(self, passages: list[Passage]) -> Observation:
        text = format_passages(passages)
        if len(text) > self.max_chars:
            text = text[: self.max_chars]
        return Observation(text, tuple(passages))

    def _failure(self, reason: str) -> Observation:
        return Observation(f"search failed: {reason}", (), True, reason)
