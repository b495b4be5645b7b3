"""The A²TGPO estimator and loss (shared/A2TGPO-SPEC.md): torch and numpy only, no I/O."""

from a2tgpo.algo.advantages import (
    ESTIMATORS,
    EstimatorDefaults,
    EstimatorSettings,
    TurnAdvantages,
    adaptive_clip_scale,
    estimator_settings,
    register_estimator,
    turn_advantage_details,
    turn_advantages,
)
from a2tgpo.algo.correction import CORRECTION_MODES, rollout_correction_weights
from a2tgpo.algo.ig import IG_MODES, information_gain, information_gain_rows
from a2tgpo.algo.loss import (
    AGGREGATIONS,
    RATIO_LEVELS,
    aggregate,
    entropy_from_log_probs,
    entropy_from_logits,
    low_var_kl,
    policy_loss,
    turn_mean,
)

__all__ = [
    "AGGREGATIONS",
    "CORRECTION_MODES",
    "ESTIMATORS",
    "IG_MODES",
    "RATIO_LEVELS",
    "EstimatorDefaults",
    "EstimatorSettings",
    "TurnAdvantages",
    "adaptive_clip_scale",
    "aggregate",
    "entropy_from_log_probs",
    "entropy_from_logits",
    "estimator_settings",
    "information_gain",
    "information_gain_rows",
    "low_var_kl",
    "policy_loss",
    "register_estimator",
    "rollout_correction_weights",
    "turn_advantage_details",
    "turn_advantages",
    "turn_mean",
]
