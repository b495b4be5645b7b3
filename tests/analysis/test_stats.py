"""a2tgpo.analysis.stats against cases worked by hand and against scipy."""

from __future__ import annotations

import math
from dataclasses import FrozenInstanceError

import numpy as np
import pytest
from scipy import stats as sps

from a2tgpo.analysis import (
    bootstrap_ci,
    curve_band,
    format_cell,
    mean_ci,
    paired_difference,
)

NAN = float("nan")


def test_mean_ci_one_to_five_by_hand():
    # mean 3, s^2 = 2.5, t(0.975, 4) = 2.7764: half width 2.7764 * sqrt(2.5) / sqrt(5).
    ci = mean_ci([1, 2, 3, 4, 5])
    assert ci.mean == 3.0 and ci.n == 5 and ci.dropped == 0 and ci.method == "t"
    assert ci.half_width == pytest.approx(1.9632, abs=1e-4)
    assert ci.half_width == pytest.approx(2.7764451 * math.sqrt(2.5) / math.sqrt(5), rel=1e-7)
    assert (ci.low, ci.high) == pytest.approx((3 - ci.half_width, 3 + ci.half_width))
    with pytest.raises(FrozenInstanceError):
        ci.mean = 0.0  # type: ignore[misc]


def test_mean_ci_matches_scipy_interval_at_other_confidence():
    x = np.array([0.21, 0.25, 0.18, 0.3, 0.22, 0.27])
    ci = mean_ci(x, confidence=0.9)
    low, high = sps.t.interval(0.9, df=x.size - 1, loc=x.mean(), scale=sps.sem(x))
    assert (ci.low, ci.high) == pytest.approx((low, high), rel=1e-12)
    assert ci.confidence == 0.9


def test_mean_ci_small_samples_and_nans():
    one = mean_ci([0.4])
    assert one.mean == 0.4 and one.n == 1
    assert all(math.isnan(v) for v in (one.low, one.high, one.half_width))
    empty = mean_ci([])
    assert empty.n == 0 and math.isnan(empty.mean) and math.isnan(empty.low)
    all_nan = mean_ci([NAN, NAN])
    assert all_nan.n == 0 and all_nan.dropped == 2 and math.isnan(all_nan.mean)
    with_nan = mean_ci([1, NAN, 2, 3, math.inf, 4, 5])
    assert with_nan.n == 5 and with_nan.dropped == 2
    assert with_nan.half_width == pytest.approx(mean_ci([1, 2, 3, 4, 5]).half_width)
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1, 2], confidence=95)


def test_paired_difference_by_hand_and_against_scipy():
    a = [0.31, 0.28, 0.35, 0.30]
    b = [0.25, 0.27, 0.30, 0.22]
    # d = [0.06, 0.01, 0.05, 0.08]: mean 0.05, s = sqrt(0.0026 / 3) = 0.029439,
    # t(0.975, 3) = 3.182446 -> half width 3.182446 * 0.029439 / 2 = 0.046844.
    pd = paired_difference(a, b)
    assert pd.mean == pytest.approx(0.05) and pd.n == 4 and pd.dropped == 0
    assert pd.half_width == pytest.approx(0.046844, abs=1e-6)
    assert pd.p_value == pytest.approx(sps.ttest_rel(a, b).pvalue, rel=1e-10)
    assert pd.p_value == pytest.approx(0.04256, abs=1e-5)
    assert pd.significant and pd.low > 0
    # The same data unpaired would not be significant: pairing is what the seeds buy.
    assert not mean_ci(a).low > mean_ci(b).high


def test_paired_difference_with_seed_dicts_uses_common_finite_seeds():
    a = {0: 0.31, 1: 0.28, 2: 0.35, 3: 0.30, 7: 0.9}
    b = {3: 0.22, 2: 0.30, 1: 0.27, 0: 0.25, 9: 0.0}
    pd = paired_difference(a, b)
    assert pd.n == 4 and pd.dropped == 2  # seeds 7 and 9 have no partner
    assert pd.mean == pytest.approx(0.05)
    pd_nan = paired_difference({**a, 1: NAN}, b)
    assert pd_nan.n == 3 and pd_nan.dropped == 3


def test_paired_difference_edge_cases():
    one = paired_difference([0.3], [0.1])
    assert one.n == 1 and one.mean == pytest.approx(0.2)
    assert math.isnan(one.p_value) and math.isnan(one.half_width) and not one.significant
    same = paired_difference([0.3, 0.5, 0.7], [0.2, 0.4, 0.6])  # every difference 0.1
    assert same.p_value == 0.0 and same.significant and same.half_width == pytest.approx(0.0)
    zero = paired_difference([0.3, 0.5], [0.3, 0.5])
    assert zero.p_value == 1.0 and not zero.significant
    noisy = paired_difference([0.3, 0.5, 0.2], [0.31, 0.45, 0.26])
    assert not noisy.significant and noisy.p_value > 0.05
    with pytest.raises(ValueError, match="differ in length"):
        paired_difference([1, 2, 3], [1, 2])
    with pytest.raises(TypeError, match="not a mix"):
        paired_difference({0: 1.0}, [1.0])


def test_bootstrap_close_to_t_on_a_large_normal_sample():
    x = np.random.default_rng(123).normal(0.3, 0.1, size=400)
    t_ci, boot = mean_ci(x), bootstrap_ci(x, n_resamples=4000, seed=1)
    assert boot.method == "bootstrap-percentile" and boot.n == 400
    assert boot.mean == t_ci.mean
    assert boot.low == pytest.approx(t_ci.low, abs=0.15 * t_ci.half_width)
    assert boot.high == pytest.approx(t_ci.high, abs=0.15 * t_ci.half_width)
    assert bootstrap_ci(x, n_resamples=4000, seed=1) == boot  # seeded: reproducible


def test_bootstrap_small_samples_and_nans():
    one = bootstrap_ci([0.5, NAN])
    assert one.n == 1 and one.dropped == 1 and math.isnan(one.low)
    constant = bootstrap_ci([0.2, 0.2, 0.2], n_resamples=100)
    assert constant.low == pytest.approx(0.2) and constant.high == pytest.approx(0.2)


def test_curve_band_ragged_curves_with_nans():
    band = curve_band([[1.0, 2.0, 3.0], [3.0, NAN], [2.0, 4.0, 5.0, 6.0]])
    np.testing.assert_array_equal(band.step, [0, 1, 2, 3])
    np.testing.assert_array_equal(band.n, [3, 2, 2, 1])
    np.testing.assert_allclose(band.mean, [2.0, 3.0, 4.0, 6.0])
    assert band.high[0] - band.mean[0] == pytest.approx(mean_ci([1, 3, 2]).half_width)
    assert math.isnan(band.low[3]) and math.isnan(band.high[3])  # one curve left: no band
    empty = curve_band([])
    assert empty.mean.size == 0


def test_format_cell():
    assert format_cell(mean_ci([1, 2, 3, 4, 5])) == "3.000 ± 1.963 (n=5)"
    assert format_cell(mean_ci([0.213]), digits=2) == "0.21 (n=1)"
    assert format_cell(mean_ci([])) == "n/a (n=0)"
    assert format_cell(paired_difference([2, 3, 4], [1, 1, 1]), signed=True).startswith("+2.000 ± ")
