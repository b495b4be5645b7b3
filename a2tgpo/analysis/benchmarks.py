"""The seven-benchmark table of the search-agent papers (Search-R1, IGPO, A²TGPO).

EM and F1 per data source, in the papers' column order: NQ, TriviaQA, PopQA (single
hop), HotpotQA, 2Wiki, MuSiQue, Bamboogle (multi hop), then the single-hop and
multi-hop averages. The averages are macro means over the benchmarks present (each
benchmark counts once, whatever its size), as the papers average their columns. Data
sources that are none of the seven follow, in name order, outside both averages.

Input is the `by_source` mapping the evaluate stage records per mode
(`{source: {"em", "f1", "count"}}`); data-source names are matched case-insensitively
against the spellings in use (verl / FlashRAG: `tq` or `triviaqa`, `2wiki` or
`2wikimultihopqa`, `Bamboogle`, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Metrics = Mapping[str, float]


@dataclass(frozen=True)
class Benchmark:
    """One column of the table: its name in the papers, its hop kind, its source names."""

    name: str
    kind: str  # "single" or "multi"
    sources: tuple[str, ...]


BENCHMARKS = (
    Benchmark("NQ", "single", ("nq", "naturalquestions")),
    Benchmark("TriviaQA", "single", ("tq", "triviaqa")),
    Benchmark("PopQA", "single", ("popqa",)),
    Benchmark("HotpotQA", "multi", ("hotpotqa", "hotpot")),
    Benchmark("2Wiki", "multi", ("2wiki", "2wikimultihopqa")),
    Benchmark("MuSiQue", "multi", ("musique",)),
    Benchmark("Bamboogle", "multi", ("bamboogle",)),
)
AVERAGES = {"single": "Single-hop avg", "multi": "Multi-hop avg"}


@dataclass(frozen=True)
class Column:
    """One column of a table: EM, F1 and the prompts (or benchmarks, for an average)."""

    name: str
    em: float
    f1: float
    count: int
    average: bool = False


def benchmark_of(source: str) -> Benchmark | None:
    """The benchmark a data-source name stands for, or None."""
    key = source.lower().replace("-", "").replace("_", "")
    return next((b for b in BENCHMARKS if key in b.sources), None)


def benchmark_columns(by_source: Mapping[str, Metrics]) -> list[Column]:
    """The table's columns: the seven benchmarks present, the two averages, the others."""
    found: dict[str, Column] = {}
    others: list[Column] = []
    for source, m in sorted(by_source.items()):
        column = Column(source, float(m["em"]), float(m["f1"]), int(m.get("count", 0)))
        benchmark = benchmark_of(source)
        if benchmark is None:
            others.append(column)
        elif benchmark.name in found:
            raise ValueError(f"two data sources name {benchmark.name}: check {sorted(by_source)}")
        else:
            found[benchmark.name] = Column(benchmark.name, column.em, column.f1, column.count)
    columns = [found[b.name] for b in BENCHMARKS if b.name in found]
    for kind, name in AVERAGES.items():
        members = [found[b.name] for b in BENCHMARKS if b.kind == kind and b.name in found]
        if members:
            em = sum(c.em for c in members) / len(members)
            f1 = sum(c.f1 for c in members) / len(members)
            columns.append(Column(name, em, f1, len(members), average=True))
    return columns + others


def benchmark_rows(results: Mapping[str, Mapping[str, Metrics]]) -> list[dict[str, Any]]:
    """The table as rows (one per evaluation mode and metric), columns in the papers'
    order: what the Prefect artifact and the terminal show."""
    rows = []
    for mode, by_source in results.items():
        columns = benchmark_columns(by_source)
        for metric in ("em", "f1"):
            row: dict[str, Any] = {"mode": mode, "metric": metric.upper()}
            row |= {c.name: round(getattr(c, metric), 4) for c in columns}
            rows.append(row)
        counts = {c.name: c.count for c in columns if not c.average}
        rows.append({"mode": mode, "metric": "n"} | counts)
    return rows


def average_metrics(by_source: Mapping[str, Metrics], prefix: str = "") -> dict[str, float]:
    """The two averages as MLflow metrics (`<prefix>em/avg_single_hop`, ...); the
    per-source numbers are logged by the rollout metrics already."""
    out = {}
    for column in benchmark_columns(by_source):
        if column.average:
            key = "avg_single_hop" if column.name == AVERAGES["single"] else "avg_multi_hop"
            out[f"{prefix}em/{key}"] = column.em
            out[f"{prefix}f1/{key}"] = column.f1
    return out
