"""The seven-benchmark evaluation end to end on the shipped test split (plumbing only).

    .venv/bin/python benchmarks/seven_benchmarks.py [--per-source 10] [--out runs/seven]

1. Builds a small passage corpus from the shipped questions (`build_demo_corpus`: one
   passage per question, titled with its first gold answer), because no retrieval
   corpus ships with them (the papers use wiki-18 with an e5 retriever).
2. Serves it with `a2tgpo serve-retriever` on 127.0.0.1 (BM25, Search-R1's API).
3. Runs `a2tgpo evaluate` on `test.parquet` with the project's tiny model (untrained:
   no warm-start), `--per-source` prompts of each benchmark, greedy and sampled, and
   prints its table: EM / F1 per benchmark in the papers' order, then the averages.

The numbers mean nothing (an untrained 2-layer model, a corpus that states each
answer next to its question); the table, the Prefect artifact and the MLflow metrics
(`eval/<mode>/em/<source>`, `eval/<mode>/em/avg_single_hop`, ...) are what is shown.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
SEARCH_QA = ROOT.parent / "shared" / "data" / "search-qa"


def build_demo_corpus(parquet: Path, out: Path) -> Path:
    """One passage per question of a verl parquet: title = its first gold answer, text =
    the question and the answer. A stand-in corpus for plumbing, not for measuring."""
    from a2tgpo.envs.rewards import split_golds

    rows = pq.read_table(parquet, columns=["prompt", "reward_model", "extra_info"]).to_pylist()
    with open(out, "w", encoding="utf-8") as f:
        for row in rows:
            question = row["prompt"][-1]["content"].strip()
            gold = split_golds(row["reward_model"]["ground_truth"])[0]
            contents = f"{gold}\n{question} The answer is {gold}."
            f.write(json.dumps({"id": row["extra_info"]["index"], "contents": contents}) + "\n")
    return out


def demo_overrides(out: Path, test_split: Path, per_source: int) -> list[str]:
    """The evaluation's settings: the search-QA test split, each benchmark alike, a
    tiny model and short trajectories (the retriever overrides come from the server)."""
    return [
        "run_id=seven-benchmarks",
        f"storage.root={out}",
        f"tracking.mlflow_uri=sqlite:///{out / 'mlflow.db'}",
        "env.kind=search_qa",
        f"env.eval_dataset={test_split}",
        f"eval.prompts_per_source={per_source}",
        "eval.sampled_group=2",
        "rollout.max_turns=3",
        "rollout.max_total_tokens=1024",
        "rollout.kv_cache_gib=0.5",
        "warmstart.enabled=false",  # the untrained initial model is the policy
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-source", type=int, default=10, help="Prompts per benchmark.")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "seven-benchmarks")
    parser.add_argument("--data", type=Path, default=SEARCH_QA, help="The search-qa folder.")
    parser.add_argument(
        "--policy",
        default="",
        help="Policy to evaluate (a checkpoint URI, e.g. runs/default/iter=00007/checkpoint "
        "after `make run`); empty = the untrained tiny model.",
    )
    args = parser.parse_args()
    from a2tgpo.envs.served_retriever import ServedRetriever

    args.out.mkdir(parents=True, exist_ok=True)
    corpus = build_demo_corpus(args.data / "test.parquet", args.out / "passages.jsonl")
    with ServedRetriever(corpus, args.out / "retriever.log") as server:
        overrides = demo_overrides(args.out, args.data / "test.parquet", args.per_source)
        sets = [a for o in (*overrides, *server.overrides()) for a in ("--set", o)]
        sets += ["--policy", args.policy] if args.policy else []
        command = [sys.executable, "-c", "from a2tgpo.cli import main; main()", "evaluate", *sets]
        print("$ a2tgpo evaluate " + " ".join(sets), flush=True)
        code = subprocess.call(command, cwd=ROOT)
    sys.exit(code)


if __name__ == "__main__":
    main()
