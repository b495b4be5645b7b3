"""Throughput of `turn_advantages` on ~1M per-turn rows (~50k groups, up to 10 turns).

    .venv/bin/python benchmarks/estimator.py [--groups 50000] [--group-size 4] [--repeat 3]

Runs on one CPU thread (torch.set_num_threads(1)); prints rows/s per estimator and,
as its last line, `rows_per_s=<a2tgpo rows/s>`. Goal (issue 2): >= 2M rows/s.
"""

from __future__ import annotations

import argparse
import time

import torch

from a2tgpo.algo import EstimatorSettings, turn_advantages
from a2tgpo.estimator_demo import random_turn_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=50_000)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-turns", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    batch = random_turn_batch(args.groups, args.group_size, args.max_turns, seed=0)
    rows = batch.turn.size
    tensors = [
        torch.from_numpy(a)
        for a in (batch.group, batch.trajectory, batch.turn, batch.ig, batch.outcome)
    ]
    print(
        f"{rows:,} rows, {args.groups:,} groups x {args.group_size}, up to {args.max_turns} turns"
    )
    best = {}
    for estimator in ("grpo", "igpo", "a2tgpo"):
        settings = EstimatorSettings.of(estimator)
        turn_advantages(*tensors, settings)  # warm-up
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            turn_advantages(*tensors, settings)
            times.append(time.perf_counter() - start)
        best[estimator] = rows / min(times)
        print(f"{estimator:>7}: {min(times) * 1e3:8.1f} ms  {best[estimator] / 1e6:6.2f} M rows/s")
    discounted = EstimatorSettings.of("a2tgpo", gamma=0.9)
    gamma_rate = rows / _time(lambda: turn_advantages(*tensors, discounted))
    print(f"a2tgpo, gamma=0.9: {gamma_rate / 1e6:6.2f} M rows/s")
    # Rows already sorted by (trajectory, turn), as the pipeline's datasets are: no sort.
    order = torch.argsort(tensors[1] * (args.max_turns + 1) + tensors[2])
    ordered = [t[order] for t in tensors]
    sorted_rate = rows / _time(lambda: turn_advantages(*ordered))
    print(f"a2tgpo, rows pre-sorted: {sorted_rate / 1e6:6.2f} M rows/s")
    print(f"rows_per_s={best['a2tgpo']:.0f}")


def _time(fn) -> float:
    fn()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
