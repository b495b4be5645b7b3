"""Summary statistics for comparing estimators over a few seeds (numpy + scipy, no I/O).

A sweep has few seeds per preset (often 3-5), so every number here comes with its
sample size and an interval that is honest at small n: the Student-t interval (not
mean +- 2 sd/sqrt(n), which at n = 3 is too narrow by a factor of ~2.2), a paired
t-test for "preset A beats preset B on the same seeds", and a percentile bootstrap as
a distribution-free alternative for larger samples.

Conventions, the same in every function:
- NaN (and +-inf) values are dropped and counted in `dropped`; they are never imputed.
- n = 0: mean, low, high and half_width are NaN.
- n = 1: the mean is the value; low, high and half_width are NaN (one value says
  nothing about spread, and a zero-width interval would claim certainty).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

NAN = float("nan")


@dataclass(frozen=True)
class Interval:
    """A mean with a two-sided confidence interval [low, high]."""

    mean: float
    low: float
    high: float
    n: int  # finite values used
    half_width: float  # (high - low) / 2; symmetric for "t"
    method: str = "t"  # "t" or "bootstrap-percentile"
    confidence: float = 0.95
    dropped: int = 0  # non-finite values left out


@dataclass(frozen=True)
class PairedDifference:
    """Mean of the per-pair differences a - b, its t interval and a paired t-test."""

    mean: float
    low: float
    high: float
    n: int  # pairs where both values are finite
    half_width: float
    p_value: float  # two-sided paired t-test of mean difference = 0
    significant: bool  # the interval excludes 0 (equivalently p < 1 - confidence)
    confidence: float = 0.95
    dropped: int = 0  # pairs left out: a key in only one input, or a non-finite value


@dataclass(frozen=True)
class CurveBand:
    """Per-step mean and t interval of several learning curves (arrays of equal length)."""

    step: np.ndarray  # 0..L-1, L = the longest curve
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: np.ndarray  # curves with a finite value at that step


def _finite(values) -> tuple[np.ndarray, int]:
    x = np.asarray(values, dtype=np.float64).ravel()
    keep = np.isfinite(x)
    return x[keep], int(x.size - keep.sum())


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def _t_half_width(x: np.ndarray, confidence: float) -> float:
    """t_{(1+c)/2, n-1} * s / sqrt(n), s the sample (ddof=1) std; NaN if n < 2."""
    if x.size < 2:
        return NAN
    quantile = sps.t.ppf(0.5 + confidence / 2.0, df=x.size - 1)
    return float(quantile * x.std(ddof=1) / math.sqrt(x.size))


def mean_ci(values, confidence: float = 0.95) -> Interval:
    """Mean of `values` with its Student-t confidence interval.

    mean +- t_{(1+confidence)/2, n-1} * s / sqrt(n). Non-finite values are dropped and
    counted; n = 1 gives NaN bounds, n = 0 NaN everywhere (see the module docstring).
    """
    _check_confidence(confidence)
    x, dropped = _finite(values)
    mean = float(x.mean()) if x.size else NAN
    half = _t_half_width(x, confidence)
    return Interval(mean, mean - half, mean + half, int(x.size), half, "t", confidence, dropped)


def _pairs(a, b) -> tuple[np.ndarray, np.ndarray, int]:
    """Aligned finite pairs from two seed->value mappings or two equal-length sequences."""
    if isinstance(a, Mapping) != isinstance(b, Mapping):
        raise TypeError("pass two mappings (seed -> value) or two aligned sequences, not a mix")
    if isinstance(a, Mapping):
        common = [key for key in a if key in b]
        unmatched = len(a) + len(b) - 2 * len(common)
        xa = np.array([a[k] for k in common], dtype=np.float64)
        xb = np.array([b[k] for k in common], dtype=np.float64)
    else:
        xa = np.asarray(a, dtype=np.float64).ravel()
        xb = np.asarray(b, dtype=np.float64).ravel()
        if xa.shape != xb.shape:
            raise ValueError(f"aligned inputs differ in length: {xa.size} vs {xb.size}")
        unmatched = 0
    keep = np.isfinite(xa) & np.isfinite(xb)
    return xa[keep], xb[keep], unmatched + int(keep.size - keep.sum())


def paired_difference(a, b, confidence: float = 0.95) -> PairedDifference:
    """Paired comparison of a and b over the same seeds: mean(a - b), t interval, p-value.

    `a`, `b`: dicts seed -> value (only seeds present in both, with finite values on
    both sides, are used) or two aligned sequences (pairs with a non-finite value on
    either side are dropped). The p-value is the two-sided paired t-test (scipy's
    `ttest_rel`). With fewer than 2 pairs the interval and p-value are NaN and
    `significant` is False. If every difference is identical the t statistic is
    degenerate: p = 0 when that difference is nonzero, 1 when it is zero.
    """
    _check_confidence(confidence)
    xa, xb, dropped = _pairs(a, b)
    d = xa - xb
    n = int(d.size)
    mean = float(d.mean()) if n else NAN
    half = _t_half_width(d, confidence)
    if n < 2:
        p_value = NAN
    elif d.std(ddof=1) == 0.0:
        p_value = 0.0 if mean != 0.0 else 1.0
    else:
        t_stat = mean / (d.std(ddof=1) / math.sqrt(n))
        p_value = float(2.0 * sps.t.sf(abs(t_stat), df=n - 1))
    low, high = mean - half, mean + half
    significant = bool(n >= 2 and (low > 0.0 or high < 0.0))
    return PairedDifference(mean, low, high, n, half, p_value, significant, confidence, dropped)


def bootstrap_ci(
    values,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> Interval:
    """Percentile-bootstrap interval of the mean (resample with replacement, seeded).

    An alternative to `mean_ci` that assumes no normality; it is too narrow at small n
    (it cannot know the tails from 3 values), so prefer `mean_ci` for a handful of
    seeds. half_width is (high - low) / 2; the interval need not be symmetric.
    """
    _check_confidence(confidence)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    x, dropped = _finite(values)
    mean = float(x.mean()) if x.size else NAN
    if x.size < 2:
        return Interval(
            mean, NAN, NAN, int(x.size), NAN, "bootstrap-percentile", confidence, dropped
        )
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // x.size)  # bound memory: chunk x n indices at a time
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        means[start:stop] = x[rng.integers(0, x.size, size=(stop - start, x.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = (float(q) for q in np.quantile(means, [tail, 1.0 - tail]))
    return Interval(
        mean,
        low,
        high,
        int(x.size),
        (high - low) / 2.0,
        "bootstrap-percentile",
        confidence,
        dropped,
    )


def curve_band(curves: Sequence[Sequence[float]], confidence: float = 0.95) -> CurveBand:
    """Per-step mean and t interval over several (e.g. per-seed) learning curves.

    Curves may differ in length (a shorter curve simply has no value at later steps)
    and may hold NaN (a missed evaluation); at each step only the finite values count,
    and `n` says how many did, so a band that narrows to one seed is visible as such.
    """
    _check_confidence(confidence)
    length = max((len(c) for c in curves), default=0)
    grid = np.full((len(curves), length), NAN)
    for row, curve in enumerate(curves):
        grid[row, : len(curve)] = np.asarray(curve, dtype=np.float64)
    per_step = [mean_ci(grid[:, k], confidence) for k in range(length)]
    return CurveBand(
        step=np.arange(length),
        mean=np.array([c.mean for c in per_step]),
        low=np.array([c.low for c in per_step]),
        high=np.array([c.high for c in per_step]),
        n=np.array([c.n for c in per_step], dtype=np.int64),
    )


def format_cell(result: Interval | PairedDifference, digits: int = 3, signed: bool = False) -> str:
    """'0.213 ± 0.041 (n=3)'; 'n/a' for what cannot be computed (n=1 has no ± part).

    `signed=True` prints a leading '+' on positive means (for differences).
    """
    if not math.isfinite(result.mean):
        return f"n/a (n={result.n})"
    sign = "+" if signed else ""
    cell = f"{result.mean:{sign}.{digits}f}"
    if math.isfinite(result.half_width):
        cell += f" ± {result.half_width:.{digits}f}"
    return f"{cell} (n={result.n})"
