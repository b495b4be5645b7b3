"""Analysis helpers for sweeps (presets x seeds): honest summary statistics, no I/O."""

from a2tgpo.analysis.stats import (
    CurveBand,
    Interval,
    PairedDifference,
    bootstrap_ci,
    curve_band,
    format_cell,
    mean_ci,
    paired_difference,
)

__all__ = [
    "CurveBand",
    "Interval",
    "PairedDifference",
    "bootstrap_ci",
    "curve_band",
    "format_cell",
    "mean_ci",
    "paired_difference",
]
