"""benchmarks/turn_norm.py on a tiny budget: the output's shape and properties that hold
by construction (no hard-coded numbers)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def turn_norm():
    spec = importlib.util.spec_from_file_location(
        "turn_norm_bench", ROOT / "benchmarks" / "turn_norm.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results(turn_norm):
    useless = [s for s in turn_norm.SETTINGS if s.harm == 0.0]
    return turn_norm.run_experiment(
        seeds=3,
        steps=15,
        groups=8,
        probe_groups=300,
        eval_groups=300,
        settings=useless,
        estimators=("grpo", "igpo", "igpo per-turn", "a2tgpo"),
    )


def test_output_has_every_setting_estimator_and_measure(turn_norm, results):
    assert set(results) == {"fixed-useless", "random-useless"}
    for r in results.values():
        assert set(r) == {"push", "train", "optimum"}
        assert set(r["push"]) == set(turn_norm.POLICIES)
        assert list(r["train"]) == ["grpo", "igpo", "igpo per-turn", "a2tgpo"]
        for stats in r["train"].values():
            assert set(stats) == {"searches", "success", "p_extra"}
            assert stats["searches"].shape == (3,)
            assert np.all((stats["searches"] >= 0) & (stats["searches"] <= turn_norm.MAX_SEARCHES))
            assert np.all((stats["success"] >= 0) & (stats["success"] <= 1))
        assert 0 < r["optimum"]["success"] <= 1
    assert results["fixed-useless"]["optimum"]["searches"] == turn_norm.HOPS


def test_outcome_only_has_no_push_on_useless_extra_searches(results):
    # The outcome cannot tell an extra useless search from answering, but does say
    # "search" while facts are missing.
    for r in results.values():
        grpo = r["push"]["start"]["grpo"]
        assert grpo["extra"].low <= 0.0 <= grpo["extra"].high
        assert grpo["needed"].low > 0.0


def test_pooled_ig_pushes_against_extra_searches(results):
    for r in results.values():
        push = r["push"]["start"]["igpo"]["extra"]
        assert push.significant and push.mean < 0.0


def test_per_turn_sum_adds_nothing_when_turn_index_determines_the_state(results):
    # With hit = 1 the found-state is a function of the turn index; the IGn of each
    # (prompt, turn) group sums to 0, so with a plain sum the IG part of the gaps, and of
    # the stopping-logit gradient, is exactly 0: training matches grpo run for run.
    r = results["fixed-useless"]
    for policy in r["push"].values():
        for key in ("needed", "extra"):
            assert abs(policy["igpo per-turn"][key].mean) < 1e-9
    np.testing.assert_allclose(
        r["train"]["igpo per-turn"]["searches"], r["train"]["grpo"]["searches"]
    )
