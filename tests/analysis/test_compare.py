"""The comparison table from member results (known numbers, no MLflow)."""

from __future__ import annotations

import math

import pytest

from a2tgpo.analysis.compare import (
    EVAL_EM,
    EVAL_F1,
    INITIAL_EM,
    MemberResult,
    csv_table,
    markdown_table,
    summarize,
)


def member(preset, seed, ems, status="FINISHED", hops=None, error=""):
    histories = {
        EVAL_EM: dict(enumerate(ems)),
        EVAL_F1: dict(enumerate(e + 0.1 for e in ems)),
        INITIAL_EM: {0: 0.1},
    }
    for h, v in (hops or {}).items():
        histories[f"{EVAL_EM}/hops_{h}"] = {len(ems) - 1: v}
    return MemberResult(f"{preset}-s{seed}", "x", preset, seed, status, error, histories)


def test_last_best_and_the_paired_difference_with_grpo():
    members = [
        member("grpo", 0, [0.2, 0.3]),
        member("grpo", 1, [0.2, 0.4]),
        member("grpo", 2, [0.2, 0.5]),
        member("a2tgpo", 0, [0.5, 0.4], hops={1: 0.6, 2: 0.2}),
        member("a2tgpo", 1, [0.2, 0.5], hops={1: 0.7, 2: 0.3}),
        member("a2tgpo", 2, [0.2, 0.7], hops={1: 0.8, 2: 0.4}),
    ]
    grpo, ours = summarize(members)
    assert grpo["em_last"].mean == pytest.approx(0.4) and grpo["em_last"].n == 3
    # t(0.975, 2) = 4.3027; sd of [0.3, 0.4, 0.5] = 0.1
    assert grpo["em_last"].half_width == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)
    assert ours["em_best"].mean == pytest.approx((0.5 + 0.5 + 0.7) / 3)
    diff = ours["vs_baseline"]  # differences 0.1, 0.1, 0.2
    assert diff.mean == pytest.approx(0.4 / 3) and diff.n == 3
    assert ours["em_hops"]["1"].mean == pytest.approx(0.7)
    assert "vs_baseline" not in grpo


def test_failed_members_are_listed_and_left_out():
    members = [
        member("grpo", 0, [0.3]),
        member("grpo", 1, [0.9], status="FAILED", error="RuntimeError: boom"),
    ]
    (row,) = summarize(members)
    assert row["em_last"].n == 1 and row["seeds"] == [0]
    table = markdown_table([row])
    assert "RuntimeError: boom" in table and "(n=1)" in table
    assert "grpo,em_last,0.3" in csv_table([row])
