"""Information gain from teacher-forced values (spec section 1)."""

from __future__ import annotations

import math

import numpy as np
import torch

from a2tgpo.algo import information_gain, information_gain_rows


def test_prob_diff_and_log_prob_diff():
    v = [math.log(0.1), math.log(0.4), math.log(0.35)]  # v(h_0), v(h_1), v(h_2): three turns
    np.testing.assert_allclose(information_gain(v), [0.3, -0.05, float("nan")], atol=1e-12)
    np.testing.assert_allclose(
        information_gain(v, "log_prob_diff"), [math.log(4), math.log(0.875), float("nan")]
    )


def test_single_turn_has_no_ig_and_nonfinite_v_gives_no_ig():
    assert torch.isnan(information_gain([-1.0])).all()
    ig = information_gain([-1.0, float("-inf"), -2.0, -2.5], "log_prob_diff")
    assert torch.isnan(ig[:2]).all() and ig[2].item() == -0.5 and torch.isnan(ig[3])


def test_rows_version_matches_per_trajectory_version_in_any_order():
    rng = np.random.default_rng(0)
    lengths = [1, 3, 5, 2]
    traj = np.repeat(np.arange(4), lengths)
    turn = np.concatenate([np.arange(n) for n in lengths])
    v = rng.normal(-2, 1, size=traj.size)
    perm = rng.permutation(traj.size)
    ig = information_gain_rows(traj[perm], turn[perm], v[perm])
    expected = torch.cat([information_gain(v[traj == t]) for t in range(4)])
    np.testing.assert_allclose(ig, expected[perm])
