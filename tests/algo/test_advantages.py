"""turn_advantages: the spec's worked example, its edge cases, bad input, and the
vectorized estimator against a loop-by-loop transcription of the spec."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import get_args

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from a2tgpo.algo import (
    ESTIMATORS,
    EstimatorDefaults,
    EstimatorSettings,
    register_estimator,
    turn_advantage_details,
    turn_advantages,
)
from a2tgpo.algo.segments import discounted_suffix_sum
from a2tgpo.config import EstimatorConfig
from tests.algo.reference import reference_advantages

NAN = float("nan")


def worked_example_rows():
    # Rollout a: 3 turns, IG [0.4, 0.1], o = 1. Rollout b: 2 turns, IG [-0.2], o = 0.
    return dict(
        group=[0, 0, 0, 0, 0],
        trajectory=["a", "a", "a", "b", "b"],
        turn=[0, 1, 2, 0, 1],
        ig=[0.4, 0.1, NAN, -0.2, NAN],
        outcome=[1.0, 1.0, 1.0, 0.0, 0.0],
    )


def test_worked_example_matches_spec():
    r = worked_example_rows()
    d = turn_advantage_details(r["group"], r["trajectory"], r["turn"], r["ig"], r["outcome"])
    np.testing.assert_allclose(d.ig_norm, [0.99999667, 0, 0, -0.99999667, 0], atol=1e-8)
    np.testing.assert_allclose(d.outcome_norm, [0.999998] * 3 + [-0.999998] * 2, atol=1e-8)
    np.testing.assert_allclose(d.ig_term, [0.70710443, 0, 0, -0.99999667, 0], atol=1e-7)
    np.testing.assert_allclose(
        d.advantage, [1.212129, 0.999998, 0.999998, -1.299997, -0.999998], atol=1e-6
    )
    c_a1 = 1 + 0.3 * math.tanh(0.99999667 / 2)
    assert c_a1 == pytest.approx(1.1386, abs=1e-4)
    expected_eps = [0.2 * c_a1, 0.2, 0.2, 0.2 * (2 - c_a1), 0.2]
    np.testing.assert_allclose(d.eps_low, expected_eps, atol=1e-7)
    np.testing.assert_allclose(d.eps_high, expected_eps, atol=1e-7)
    assert d.eps_low[0] == pytest.approx(0.2277, abs=1e-4)
    assert d.eps_low[3] == pytest.approx(0.1723, abs=1e-4)


def test_worked_example_is_order_free_and_accepts_tensors():
    r = worked_example_rows()
    perm = [4, 2, 0, 3, 1]
    adv, _, _ = turn_advantages(
        torch.tensor(r["group"])[perm],
        torch.tensor([0, 0, 0, 1, 1])[perm],
        torch.tensor(r["turn"])[perm],
        torch.tensor(r["ig"])[perm],
        torch.tensor(r["outcome"])[perm],
    )
    base, _, _ = turn_advantages(*r.values())
    assert adv.dtype == torch.float64 and adv.shape == (5,)
    np.testing.assert_allclose(adv, base[perm])


def test_group_of_one_at_a_deep_turn_gives_zero_normalized_ig():
    # Only rollout a reaches turn 1 with a tool call: its IGn there is 0.
    r = worked_example_rows()
    d = turn_advantage_details(*r.values())
    assert d.ig_norm[1] == 0 and d.clip_scale[1] == 1


def test_all_equal_ig_gives_zero():
    d = turn_advantage_details(
        [0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 0, 1], [0.3, NAN, 0.3, NAN], [1, 1, 0, 0]
    )
    assert torch.equal(d.ig_norm, torch.zeros(4))


def test_answer_at_turn_one_has_only_the_outcome():
    adv, lo, _ = turn_advantages([0, 0], [0, 1], [0, 0], [5.0, -5.0], [1.0, 0.0])
    np.testing.assert_allclose(adv, [0.999998, -0.999998], atol=1e-8)
    assert torch.equal(lo, torch.full((2,), 0.2, dtype=torch.float64))


def test_terminal_ig_is_ignored_and_nan_ig_left_out():
    base = turn_advantage_details(
        [0] * 4, [0, 0, 1, 1], [0, 1, 0, 1], [0.5, 9.0, -0.5, -9.0], [1, 1, 0, 0]
    )
    nan_terminal = turn_advantage_details(
        [0] * 4, [0, 0, 1, 1], [0, 1, 0, 1], [0.5, NAN, -0.5, NAN], [1, 1, 0, 0]
    )
    assert torch.equal(base.advantage, nan_terminal.advantage)
    d = turn_advantage_details(
        [0] * 6, [0, 0, 1, 1, 2, 2], [0, 1] * 3, [0.5, 0, math.inf, 0, -0.5, 0], [1, 1, 0, 0, 1, 1]
    )
    assert not d.ig_valid[2] and d.ig_norm[2] == 0
    np.testing.assert_allclose(d.ig_norm[[0, 4]], [0.999998, -0.999998], atol=1e-6)


def test_single_rollout_group_has_zero_outcome_advantage():
    adv, _, _ = turn_advantages([7, 7], [3, 3], [0, 1], [0.2, NAN], [1.0, 1.0])
    assert torch.equal(adv, torch.zeros(2, dtype=torch.float64))


def test_empty_batch():
    adv, lo, hi = turn_advantages([], [], [], [], [])
    assert adv.numel() == lo.numel() == hi.numel() == 0


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (dict(turn=[0, 1, 0]), "length mismatch"),
        (dict(turn=[0, 0, 0, 1]), r"duplicate \(trajectory, turn\): row 0 .*row 1"),
        (dict(turn=[0, 2, 0, 1]), r"gap in a trajectory's turn indices: row 0 .*row 1"),
        (dict(outcome=[1.0, 0.0, 0.0, 0.0]), "outcome differs within a trajectory: row 0"),
        (dict(group=[0, 1, 1, 1]), "more than one group: row 0 .*row 1"),
        (dict(turn=[0, -1, 0, 1]), "negative turn index: row 1"),
        (dict(turn=[0.0, 0.5, 0.0, 1.0]), "integer turn indices"),
        (dict(outcome=[NAN, NAN, 0.0, 0.0]), "non-finite outcome: row 0"),
    ],
)
def test_bad_input_names_the_rows(rows, message):
    base = dict(
        group=[0, 0, 1, 1],
        trajectory=["t0", "t0", "t1", "t1"],
        turn=[0, 1, 0, 1],
        ig=[0.1, NAN, 0.2, NAN],
        outcome=[1.0, 1.0, 0.0, 0.0],
    )
    base.update(rows)
    with pytest.raises(ValueError, match=message):
        turn_advantages(**base)


def test_error_names_the_callers_trajectory_id():
    with pytest.raises(ValueError, match="trajectory 'rollout-9', turn 1"):
        turn_advantages([0, 0], ["rollout-9"] * 2, [1, 1], [0.0, 0.0], [0.0, 0.0])


def test_bad_arguments():
    r = worked_example_rows()
    with pytest.raises(ValueError, match="unknown estimator"):
        turn_advantages(*r.values(), estimator="ppo")
    with pytest.raises(ValueError, match="gamma"):
        turn_advantages(*r.values(), gamma=1.5)
    with pytest.raises(ValueError, match="clip_beta"):
        turn_advantages(*r.values(), clip_beta=1.0)


def test_settings_resolve_every_switch_from_the_table():
    assert EstimatorSettings.of().as_dict() == {
        "name": "a2tgpo",
        "gamma": 1.0,
        "clip_eps_low": 0.2,
        "clip_eps_high": 0.2,
        "clip_beta": 0.3,
        "turn_group_norm": True,
        "variance_rescale": True,
        "adaptive_clip": True,
        "clip_magnitude": False,
        "ig_coef": 0.3,
    }
    igpo = EstimatorSettings.of("igpo", ig_coef=None, gamma=0.9)  # None keeps the default
    assert (igpo.ig_coef, igpo.gamma, igpo.turn_group_norm, igpo.uses_ig) == (1.0, 0.9, False, True)
    assert not EstimatorSettings.of("grpo").uses_ig
    with pytest.raises(TypeError, match="gama"):
        EstimatorSettings.of("a2tgpo", gama=0.9)
    with pytest.raises(ValueError, match="unresolved"):
        EstimatorSettings(name="grpo", turn_group_norm=None, variance_rescale=False,
                          adaptive_clip=False, ig_coef=0.0)  # fmt: skip


def test_the_config_section_is_the_settings():
    # One spelling of each setting: the config section has exactly the settings' fields
    # (besides its schedule) and offers exactly the registered estimators.
    settings = set(EstimatorConfig.model_fields) - EstimatorConfig.SCHEDULE_FIELDS
    assert settings == {f.name for f in fields(EstimatorSettings)}
    assert set(get_args(EstimatorConfig.model_fields["name"].annotation)) == set(ESTIMATORS)
    assert EstimatorConfig().settings() == EstimatorSettings.of()
    ablation = EstimatorConfig(name="a2tgpo", adaptive_clip=False).settings()
    assert ablation.as_dict()["adaptive_clip"] is False
    assert ablation.as_dict()["variance_rescale"] is True  # logged resolved, never None


def test_settings_and_keywords_give_the_same_result():
    r = worked_example_rows()
    by_keywords = turn_advantages(*r.values(), estimator="igpo", gamma=0.5)
    by_settings = turn_advantages(*r.values(), EstimatorSettings.of("igpo", gamma=0.5))
    for a, b in zip(by_keywords, by_settings, strict=True):
        assert torch.equal(a, b)
    with pytest.raises(TypeError, match="not both"):
        turn_advantages(*r.values(), EstimatorSettings.of(), gamma=0.5)


def test_a_registered_variant_is_one_entry():
    r = worked_example_rows()
    defaults = EstimatorDefaults(
        uses_ig=True, turn_group_norm=False, variance_rescale=True, adaptive_clip=False, ig_coef=1.0
    )
    register_estimator("igpo-rescaled", defaults)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_estimator("igpo-rescaled", defaults)
        variant = turn_advantages(*r.values(), estimator="igpo-rescaled")
        igpo = turn_advantages(*r.values(), estimator="igpo", variance_rescale=True)
        for a, b in zip(variant, igpo, strict=True):
            assert torch.equal(a, b)
    finally:
        del ESTIMATORS["igpo-rescaled"]


def test_a_trajectory_may_start_after_turn_zero():
    # Contiguous from its first turn (spec); n counts the terms from the turn to the end.
    d = turn_advantage_details(
        [0, 0, 0, 0], [0, 0, 1, 1], [2, 3, 2, 3], [0.4, NAN, -0.2, NAN], [1, 1, 0, 0]
    )
    np.testing.assert_allclose(d.ig_term, [0.99999667, 0, -0.99999667, 0], atol=1e-7)


@st.composite
def batches(draw, max_groups=4, max_group_size=4, max_turns=5, ig_values=None):
    trajs = {}
    tid = 0
    for g in range(draw(st.integers(1, max_groups))):
        for _ in range(draw(st.integers(1, max_group_size))):
            turns = draw(st.integers(1, max_turns))
            values = (
                ig_values if ig_values is not None else st.one_of(st.floats(-1, 1), st.just(NAN))
            )
            igs = draw(st.lists(values, min_size=turns, max_size=turns))
            outcome = draw(st.sampled_from([0.0, 0.5, 1.0, -2.0]))
            trajs[f"g{g}-t{tid}"] = (g, outcome, igs)
            tid += 1
    return trajs


def flat(trajs):
    rows = [(g, tid, k, ig, o) for tid, (g, o, igs) in trajs.items() for k, ig in enumerate(igs)]
    g, t, k, ig, o = zip(*rows, strict=True)
    return list(g), list(t), list(k), list(ig), list(o)


SWITCHES = st.fixed_dictionaries(
    {
        "estimator": st.sampled_from(["grpo", "igpo", "a2tgpo"]),
        "gamma": st.sampled_from([1.0, 0.9, 0.5, 0.0]),
        "turn_group_norm": st.sampled_from([None, True, False]),
        "variance_rescale": st.sampled_from([None, True, False]),
        "adaptive_clip": st.sampled_from([None, True, False]),
        "ig_coef": st.sampled_from([None, 0.3, 1.0]),
        "clip_magnitude": st.booleans(),
    }
)
DEFAULTS = {
    "grpo": (False, False, False, 0.0),
    "igpo": (False, False, False, 1.0),
    "a2tgpo": (True, True, True, 0.3),
}


@settings(max_examples=150, deadline=None)
@given(batches(), SWITCHES)
def test_matches_the_spec_transcription(trajs, sw):
    per_turn, rescale, adaptive, alpha = DEFAULTS[sw["estimator"]]
    pick = lambda v, d: d if v is None else v  # noqa: E731
    ref = reference_advantages(
        trajs,
        per_turn=pick(sw["turn_group_norm"], per_turn),
        rescale=pick(sw["variance_rescale"], rescale),
        adaptive=pick(sw["adaptive_clip"], adaptive),
        alpha=pick(sw["ig_coef"], alpha),
        gamma=sw["gamma"],
        beta=0.3,
        eps_low=0.2,
        eps_high=0.28,
        uses_ig=sw["estimator"] != "grpo",
        magnitude=sw["clip_magnitude"],
    )
    g, t, k, ig, o = flat(trajs)
    adv, lo, hi = turn_advantages(g, t, k, ig, o, clip_eps_high=0.28, **sw)
    expected = np.array([ref[tid, kk] for tid, kk in zip(t, k, strict=True)])
    np.testing.assert_allclose(adv, expected[:, 0], atol=1e-9)
    np.testing.assert_allclose(lo, expected[:, 1], atol=1e-12)
    np.testing.assert_allclose(hi, expected[:, 2], atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(batches(), st.randoms(use_true_random=False))
def test_row_permutation_and_relabelling_change_nothing(trajs, rnd):
    g, t, k, ig, o = flat(trajs)
    base = turn_advantages(g, t, k, ig, o)
    perm = list(range(len(g)))
    rnd.shuffle(perm)
    relabel_t = {tid: f"x{rnd.random()}-{i}" for i, tid in enumerate(sorted(set(t)))}
    relabel_g = {gid: rnd.randint(-(10**9), 10**9) * 64 + gid for gid in set(g)}
    moved = turn_advantages(
        [relabel_g[g[i]] for i in perm],
        [relabel_t[t[i]] for i in perm],
        [k[i] for i in perm],
        [ig[i] for i in perm],
        [o[i] for i in perm],
    )
    for a, b in zip(base, moved, strict=True):
        np.testing.assert_allclose(a[perm], b, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(batches(), st.sampled_from([1.0, 0.8]))
def test_a2tgpo_with_components_off_is_igpo(trajs, gamma):
    rows = flat(trajs)
    igpo = turn_advantages(*rows, estimator="igpo", gamma=gamma)
    off = turn_advantages(
        *rows,
        estimator="a2tgpo",
        gamma=gamma,
        turn_group_norm=False,
        variance_rescale=False,
        adaptive_clip=False,
        ig_coef=1.0,
    )
    for a, b in zip(igpo, off, strict=True):
        assert torch.equal(a, b)


@settings(max_examples=60, deadline=None)
@given(batches(ig_values=st.sampled_from([-0.6, -0.2, 0.1, 0.5, NAN])), st.floats(0.5, 50.0))
def test_positive_ig_rescaling_leaves_turn_group_advantages_unchanged(trajs, scale):
    g, t, k, ig, o = flat(trajs)
    base = turn_advantage_details(g, t, k, ig, o)
    scaled = turn_advantage_details(g, t, k, [x * scale for x in ig], o)
    # (s x - s m) / (s sd + 1e-6) equals (x - m) / (sd + 1e-6) up to the 1e-6 term; with
    # IG values at least 0.1 apart every nonzero sd is >= 0.05, so that term is < 1e-4.
    np.testing.assert_allclose(base.ig_norm, scaled.ig_norm, atol=1e-4)
    np.testing.assert_allclose(base.advantage, scaled.advantage, atol=1e-4)


@settings(max_examples=60, deadline=None)
@given(batches())
def test_grpo_gives_one_advantage_per_trajectory(trajs):
    g, t, k, ig, o = flat(trajs)
    adv, lo, hi = turn_advantages(g, t, k, ig, o, estimator="grpo")
    per_traj = {}
    for tid, a in zip(t, adv.tolist(), strict=True):
        per_traj.setdefault(tid, set()).add(a)
    assert all(len(v) == 1 for v in per_traj.values())
    assert torch.all(lo == 0.2) and torch.all(hi == 0.2)


@settings(max_examples=40, deadline=None)
@given(batches())
def test_groups_of_one_always_give_zero(trajs):
    # Give every trajectory its own group: no IG group and no outcome group has 2 members.
    _, t, k, ig, o = flat(trajs)
    d = turn_advantage_details(t, t, k, ig, o)
    assert torch.equal(d.ig_norm, torch.zeros_like(d.ig_norm))
    assert torch.equal(d.advantage, torch.zeros_like(d.advantage))


def test_gamma_one_fast_path_equals_the_recurrence():
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 9, size=500)
    traj = torch.from_numpy(np.repeat(np.arange(500), lengths))
    values = torch.from_numpy(rng.normal(size=traj.numel()))
    last_row = torch.from_numpy(np.cumsum(lengths) - 1)
    terms_after = last_row[traj] - torch.arange(traj.numel())
    fast = discounted_suffix_sum(values, traj, last_row, terms_after, 1.0)
    slow = discounted_suffix_sum(values, traj, last_row, terms_after, 1.0 - 1e-15)
    np.testing.assert_allclose(fast, slow, atol=1e-10)
