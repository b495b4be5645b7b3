"""Turn-level advantages and clip ranges: A²TGPO, with IGPO and GRPO as switches.

Reads like shared/A2TGPO-SPEC.md, sections 2-4 (1-based k there, 0-based turns here):

    IGn  = (IG - mean(G_{q,k})) / (std(G_{q,k}) + 1e-6)      per (prompt, turn index)
    On   = (o - mean_q(o)) / (std_q(o) + 1e-6)                per prompt, over its G rollouts
    D    = sum_{m >= k, m < T} gamma^(m-k) IGn_m / sqrt(T - k) (0 on the terminal turn)
    A    = On + alpha * D
    c    = 1 + beta * tanh(IGn / 2);  eps_low/high = eps * c  (1 on the terminal turn)

Each component is a switch; the estimators are presets of the switches:

    estimator  IG   normalization         accumulation     alpha  clip
    grpo       no   outcome only          A = On           -      constant
    igpo       yes  pooled per prompt     plain sum        1.0    constant
    a2tgpo     yes  per (prompt, turn)    / sqrt(n terms)  0.3    adaptive

The table is `ESTIMATORS` (a variant is one `register_estimator` entry); one
`EstimatorSettings` value holds every switch, resolved, and is what the estimator runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from a2tgpo.algo.rows import TurnRows, prepare_turn_rows
from a2tgpo.algo.segments import (
    as_tensor,
    dense_ids,
    discounted_suffix_sum,
    segment_mean_std,
)

STD_EPS = 1e-6  # spec: std + 1e-6 in both normalizations
_DENSE_KEY_LIMIT = 1 << 26  # (group, turn) keys beyond this are relabelled with unique()


@dataclass(frozen=True, kw_only=True)
class EstimatorDefaults:
    """A registered estimator: whether it uses IG, and its defaults of the preset switches.

    Every field but `uses_ig` is named as the `EstimatorSettings` field it fills.
    """

    uses_ig: bool
    turn_group_norm: bool
    variance_rescale: bool
    adaptive_clip: bool
    ig_coef: float


# The spec's baseline table; `register_estimator` adds a variant.
ESTIMATORS: dict[str, EstimatorDefaults] = {
    "grpo": EstimatorDefaults(
        uses_ig=False,
        turn_group_norm=False,
        variance_rescale=False,
        adaptive_clip=False,
        ig_coef=0.0,
    ),
    "igpo": EstimatorDefaults(
        uses_ig=True,
        turn_group_norm=False,
        variance_rescale=False,
        adaptive_clip=False,
        ig_coef=1.0,
    ),
    "a2tgpo": EstimatorDefaults(
        uses_ig=True,
        turn_group_norm=True,
        variance_rescale=True,
        adaptive_clip=True,
        ig_coef=0.3,
    ),
}


def register_estimator(name: str, defaults: EstimatorDefaults) -> None:
    """Add an estimator by name; its switches' defaults are `defaults`."""
    if name in ESTIMATORS:
        raise ValueError(f"estimator {name!r} is already registered")
    ESTIMATORS[name] = defaults


def estimator_defaults(name: str) -> EstimatorDefaults:
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; choose one of {sorted(ESTIMATORS)}")
    return ESTIMATORS[name]


@dataclass(frozen=True, kw_only=True)
class EstimatorSettings:
    """Every setting of the estimator, resolved: what `turn_advantage_details` runs.

    Build it with `EstimatorSettings.of(name, **overrides)`: the preset switches
    (no default here, so a name never silently gets another estimator's) come from
    the name's `ESTIMATORS` entry, the rest from the defaults below (spec values).
    """

    name: str
    gamma: float = 1.0
    clip_eps_low: float = 0.2
    clip_eps_high: float = 0.2
    clip_beta: float = 0.3
    turn_group_norm: bool
    variance_rescale: bool
    adaptive_clip: bool
    clip_magnitude: bool = False
    ig_coef: float

    def __post_init__(self) -> None:
        estimator_defaults(self.name)
        unresolved = [f.name for f in fields(self) if getattr(self, f.name) is None]
        if unresolved:
            raise ValueError(f"estimator settings left unresolved: {unresolved}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")
        if not 0.0 <= self.clip_beta < 1.0:
            raise ValueError(
                f"clip_beta must lie in [0, 1) so clip ranges stay positive, got {self.clip_beta}"
            )
        if self.clip_eps_low <= 0 or self.clip_eps_high <= 0:
            raise ValueError("clip_eps_low and clip_eps_high must be positive")

    @classmethod
    def of(cls, name: str = "a2tgpo", **overrides: Any) -> EstimatorSettings:
        """The named estimator's settings; overrides that are None keep the default."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown estimator settings {unknown}; known: {sorted(known)}")
        preset = estimator_defaults(name)
        values = {f.name: getattr(preset, f.name) for f in fields(preset) if f.name in known}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(name=name, **values)

    @property
    def uses_ig(self) -> bool:
        return ESTIMATORS[self.name].uses_ig

    def as_dict(self) -> dict[str, Any]:
        """Every setting by name, resolved (for MLflow params and stage stats)."""
        return asdict(self)


def estimator_settings(
    settings: EstimatorSettings | None = None, /, **keywords: Any
) -> EstimatorSettings:
    """`settings` as given, or built from keywords: `estimator=<name>` and setting overrides."""
    if settings is None:
        return EstimatorSettings.of(keywords.pop("estimator", "a2tgpo"), **keywords)
    if keywords:
        raise TypeError("pass an EstimatorSettings or keyword settings, not both")
    return settings


@dataclass(frozen=True)
class TurnAdvantages:
    """Every intermediate of the estimator, aligned with the caller's rows (float64)."""

    advantage: torch.Tensor
    eps_low: torch.Tensor
    eps_high: torch.Tensor
    ig_norm: torch.Tensor  # IGn; 0 where the turn has no IG
    ig_valid: torch.Tensor  # bool: the turn has a finite IG that entered the statistics
    outcome_norm: torch.Tensor  # On of the row's trajectory
    ig_term: torch.Tensor  # D (before alpha)
    clip_scale: torch.Tensor  # c


def turn_advantages(
    group,
    trajectory,
    turn,
    ig,
    outcome,
    settings: EstimatorSettings | None = None,
    **keywords: Any,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-turn advantage, eps_low and eps_high (1-D float64 tensors aligned with the rows).

    Rows: one per assistant turn, in any order. `group` is the prompt group, `turn` the
    0-based turn index, `ig` the turn's IG (ignored on a trajectory's last turn; NaN =
    no IG), `outcome` the trajectory's outcome repeated on each of its rows. Settings:
    an `EstimatorSettings`, or keywords `estimator="a2tgpo"`, `gamma=...`, ... (its
    fields; a switch left out or None takes the estimator's default, see the module
    table). Bad rows raise ValueError naming them.
    """
    details = turn_advantage_details(
        group, trajectory, turn, ig, outcome, estimator_settings(settings, **keywords)
    )
    return details.advantage, details.eps_low, details.eps_high


def turn_advantage_details(
    group, trajectory, turn, ig, outcome, settings: EstimatorSettings | None = None
) -> TurnAdvantages:
    """`turn_advantages` with every intermediate (for logging and tests); None = a2tgpo."""
    s = settings if settings is not None else EstimatorSettings.of()
    rows = prepare_turn_rows(group, trajectory, turn, outcome)
    ig_t = as_tensor(ig, "ig", torch.float64)
    if ig_t.shape[0] != rows.order.shape[0]:
        raise ValueError(
            f"length mismatch: ig has {ig_t.shape[0]} rows, turns have {rows.order.shape[0]}"
        )
    s_ig = rows.sort(ig_t)

    outcome_norm = normalize_outcome(rows)[rows.traj]
    if s.uses_ig:
        ig_valid = ~rows.is_last & torch.isfinite(s_ig)
        ig_norm = normalize_ig(rows, s_ig, ig_valid, per_turn_index=s.turn_group_norm)
        ig_term = accumulate_ig(rows, ig_norm, gamma=s.gamma, variance_rescale=s.variance_rescale)
        advantage = outcome_norm + s.ig_coef * ig_term
    else:
        ig_valid = torch.zeros_like(rows.is_last)
        ig_norm = torch.zeros_like(s_ig)
        ig_term = torch.zeros_like(s_ig)
        advantage = outcome_norm
    clip_scale = (
        adaptive_clip_scale(ig_norm, s.clip_beta, magnitude=s.clip_magnitude)
        if s.adaptive_clip
        else torch.ones_like(ig_norm)
    )
    return TurnAdvantages(
        advantage=rows.unsort(advantage),
        eps_low=rows.unsort(s.clip_eps_low * clip_scale),
        eps_high=rows.unsort(s.clip_eps_high * clip_scale),
        ig_norm=rows.unsort(ig_norm),
        ig_valid=rows.unsort(ig_valid),
        outcome_norm=rows.unsort(outcome_norm),
        ig_term=rows.unsort(ig_term),
        clip_scale=rows.unsort(clip_scale),
    )


def normalize_outcome(rows: TurnRows) -> torch.Tensor:
    """On per trajectory: GRPO normalization over the G rollouts of each prompt (0 if G < 2)."""
    count, mean, std = segment_mean_std(rows.traj_outcome, rows.traj_group, rows.num_groups)
    g = rows.traj_group
    normed = (rows.traj_outcome - mean[g]) / (std[g] + STD_EPS)
    return torch.where(count[g] >= 2, normed, torch.zeros_like(normed))


def normalize_ig(
    rows: TurnRows, ig: torch.Tensor, valid: torch.Tensor, *, per_turn_index: bool
) -> torch.Tensor:
    """IGn: IG standardized within its (prompt, turn index) group, or pooled per prompt.

    Only valid IG values enter the statistics; a group of fewer than two gives 0, and
    rows without IG get 0.
    """
    if per_turn_index:
        span = int(rows.turn.max()) + 1 if rows.turn.numel() else 1
        key = rows.group * span + rows.turn
        if rows.num_groups * span > _DENSE_KEY_LIMIT:
            key, num_keys = dense_ids(key)
        else:
            num_keys = rows.num_groups * span
    else:
        key, num_keys = rows.group, rows.num_groups
    idx = torch.nonzero(valid).flatten()
    values, keys = ig[idx], key[idx]
    count, mean, std = segment_mean_std(values, keys, max(num_keys, 1))
    normed = (values - mean[keys]) / (std[keys] + STD_EPS)
    normed = torch.where(count[keys] >= 2, normed, torch.zeros_like(normed))
    out = torch.zeros_like(ig)
    out[idx] = normed
    return out


def accumulate_ig(
    rows: TurnRows, ig_norm: torch.Tensor, *, gamma: float, variance_rescale: bool
) -> torch.Tensor:
    """D: discounted sum of this and later turns' IGn, / sqrt(number of terms) if rescaled."""
    summed = discounted_suffix_sum(ig_norm, rows.traj, rows.last_row, rows.terms_after, gamma)
    terms = rows.terms_after.to(torch.float64)
    if variance_rescale:
        summed = summed / terms.clamp(min=1).sqrt()
    return torch.where(rows.is_last, torch.zeros_like(summed), summed)


def adaptive_clip_scale(
    ig_norm: torch.Tensor, beta: float, *, magnitude: bool = False
) -> torch.Tensor:
    """c = 1 + beta * tanh(IGn / 2) = 1 + beta * (2 sigmoid(IGn) - 1), in (1 - beta, 1 + beta)."""
    x = ig_norm.abs() if magnitude else ig_norm
    return 1.0 + beta * torch.tanh(x / 2.0)
