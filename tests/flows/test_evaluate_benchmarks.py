"""The seven-benchmark evaluation end to end: the shipped test split, a corpus the test
builds, served by `a2tgpo serve-retriever`, `evaluate_flow` (Prefect harness, vLLM on
CPU, MLflow on sqlite), and the table `a2tgpo evaluate` prints."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console

from a2tgpo.cli import benchmark_table
from a2tgpo.envs.served_retriever import ServedRetriever
from a2tgpo.presets import resolve_config
from benchmarks.seven_benchmarks import build_demo_corpus, demo_overrides
from flows.evaluate import evaluate_flow
from tests.search_qa_data import SEARCH_QA, needs_data

pytestmark = [pytest.mark.slow, needs_data]
COLUMNS = ["NQ", "TriviaQA", "PopQA", "HotpotQA", "2Wiki", "MuSiQue", "Bamboogle"]


def test_seven_benchmark_table_from_evaluate(prefect_harness, tmp_path, mlflow_uri):
    test_split = SEARCH_QA / "test.parquet"
    corpus = build_demo_corpus(test_split, tmp_path / "passages.jsonl")
    assert sum(1 for _ in corpus.open()) == 3197
    with ServedRetriever(corpus, tmp_path / "retriever.log", cache_dir=tmp_path / "idx") as server:
        overrides = demo_overrides(tmp_path / "runs", test_split, per_source=2)
        overrides += [*server.overrides(), f"tracking.mlflow_uri={mlflow_uri}"]
        overrides += ["eval.sampled_group=1", "rollout.max_turns=2", "rollout.kv_cache_gib=0.25"]
        overrides += ["model.tiny_max_positions=1024", "rollout.max_total_tokens=640"]
        try:
            result = evaluate_flow(config=resolve_config("embedded", overrides))
        finally:
            print(f"--- retriever log ---\n{server.tail()}")  # shown on failure
    for mode in ("greedy", "sampled"):
        by_source = result["results"][mode]
        assert sorted(by_source) == sorted(
            ["nq", "tq", "popqa", "hotpotqa", "2wiki", "musique", "Bamboogle"]
        )
        assert all(m["count"] == 2 for m in by_source.values())

    console = Console(record=True, width=200)
    console.print(benchmark_table(result["results"]))
    header = next(line for line in console.export_text().splitlines() if "NQ" in line)
    names = [*COLUMNS, "Single-hop avg", "Multi-hop avg"]
    assert [header.index(n) for n in names] == sorted(header.index(n) for n in names)

    client = MlflowClient(mlflow_uri)
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.mlflow.runName LIKE 'eval-%'"
    )
    metrics = run.data.metrics
    for key in ("em/nq", "em/Bamboogle", "em/avg_single_hop", "f1/avg_multi_hop"):
        assert f"eval/greedy/{key}" in metrics

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as prefect:
        key = ArtifactFilterKey(any_=["seven-benchmarks-eval-00000"])
        (artifact,) = prefect.read_artifacts(artifact_filter=ArtifactFilter(key=key))
    assert '"NQ"' in str(artifact.data) and "Multi-hop avg" in str(artifact.data)
