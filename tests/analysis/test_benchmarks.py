"""The seven-benchmark table: column order, name spellings, macro averages, others."""

from __future__ import annotations

import pytest

from a2tgpo.analysis.benchmarks import (
    average_metrics,
    benchmark_columns,
    benchmark_of,
    benchmark_rows,
)

# the shipped files' spellings, shuffled
BY_SOURCE = {
    "musique": {"em": 0.1, "f1": 0.2, "count": 10},
    "Bamboogle": {"em": 0.3, "f1": 0.4, "count": 5},
    "tq": {"em": 0.5, "f1": 0.6, "count": 10},
    "nq": {"em": 0.4, "f1": 0.5, "count": 10},
    "2wiki": {"em": 0.2, "f1": 0.3, "count": 10},
    "popqa": {"em": 0.3, "f1": 0.35, "count": 10},
    "hotpotqa": {"em": 0.2, "f1": 0.25, "count": 10},
}


def test_columns_follow_the_papers_order_then_the_averages():
    columns = benchmark_columns(BY_SOURCE)
    assert [c.name for c in columns] == [
        "NQ", "TriviaQA", "PopQA", "HotpotQA", "2Wiki", "MuSiQue", "Bamboogle",
        "Single-hop avg", "Multi-hop avg",
    ]  # fmt: skip
    single, multi = columns[-2:]
    assert single.em == pytest.approx((0.4 + 0.5 + 0.3) / 3)  # macro: each benchmark once
    assert multi.f1 == pytest.approx((0.25 + 0.3 + 0.2 + 0.4) / 4)
    assert (single.count, multi.count) == (3, 4)


def test_spellings_partial_tables_and_other_sources():
    assert benchmark_of("TriviaQA").name == benchmark_of("tq").name == "TriviaQA"
    assert benchmark_of("2WikiMultihopQA").name == "2Wiki" and benchmark_of("synthetic") is None
    columns = benchmark_columns(
        {"synthetic": {"em": 1.0, "f1": 1.0, "count": 4}, "nq": BY_SOURCE["nq"]}
    )
    assert [c.name for c in columns] == ["NQ", "Single-hop avg", "synthetic"]
    with pytest.raises(ValueError, match="TriviaQA"):
        benchmark_columns({"tq": BY_SOURCE["tq"], "triviaqa": BY_SOURCE["tq"]})


def test_rows_for_the_artifact_and_metrics_for_mlflow():
    rows = benchmark_rows({"greedy": BY_SOURCE, "sampled": BY_SOURCE})
    assert [(r["mode"], r["metric"]) for r in rows] == [
        ("greedy", "EM"), ("greedy", "F1"), ("greedy", "n"),
        ("sampled", "EM"), ("sampled", "F1"), ("sampled", "n"),
    ]  # fmt: skip
    assert list(rows[0])[2:5] == ["NQ", "TriviaQA", "PopQA"] and rows[0]["NQ"] == 0.4
    assert rows[2]["Bamboogle"] == 5 and "Single-hop avg" not in rows[2]
    metrics = average_metrics(BY_SOURCE, prefix="eval/greedy/")
    assert set(metrics) == {
        "eval/greedy/em/avg_single_hop", "eval/greedy/f1/avg_single_hop",
        "eval/greedy/em/avg_multi_hop", "eval/greedy/f1/avg_multi_hop",
    }  # fmt: skip
