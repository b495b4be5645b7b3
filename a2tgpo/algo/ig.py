"""Information gain from teacher-forced answer values (spec section 1).

v(h) is the mean log-probability of the gold answer's tokens after context h. With
the values v(h_0) .. v(h_{T-1}) of one trajectory (the contexts before each of its T
turns), the tool-call turn k (1-based, k < T) gets

    IG_k = f(v(h_k)) - f(v(h_{k-1})),   f = exp ("prob_diff") or identity ("log_prob_diff")

and the terminal turn gets none (NaN). A non-finite v makes the IGs next to it NaN,
which the estimator treats as "no IG".
"""

from __future__ import annotations

import torch

from a2tgpo.algo.segments import as_tensor

IG_MODES = ("prob_diff", "log_prob_diff")


def _transform(v: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "prob_diff":
        return torch.exp(v)
    if mode == "log_prob_diff":
        return v
    raise ValueError(f"unknown IG mode {mode!r}; choose one of {IG_MODES}")


def information_gain(v, mode: str = "prob_diff") -> torch.Tensor:
    """IG per turn of one trajectory, from v(h_0) .. v(h_{T-1}); NaN on the last turn."""
    values = as_tensor(v, "v", torch.float64)
    f = _transform(values, mode)
    ig = torch.full_like(values, float("nan"))
    if values.numel() > 1:
        ig[:-1] = f[1:] - f[:-1]
    return _finite_or_nan(ig)


def information_gain_rows(trajectory, turn, v, mode: str = "prob_diff") -> torch.Tensor:
    """Vectorized `information_gain` over flat per-turn rows in any order.

    Row r holds v of the context before its turn; its IG uses the next turn of the
    same trajectory (NaN when there is none, i.e. on the terminal turn).
    """
    traj_t = as_tensor(trajectory, "trajectory")
    turn_t = as_tensor(turn, "turn").to(torch.int64)
    values = as_tensor(v, "v", torch.float64)
    if not traj_t.shape[0] == turn_t.shape[0] == values.shape[0]:
        raise ValueError("trajectory, turn and v must have the same length")
    n = values.shape[0]
    ig = torch.full_like(values, float("nan"))
    if n < 2:
        return ig
    _, traj_ids = torch.unique(traj_t, return_inverse=True)
    span = int(turn_t.max()) + 1
    order = torch.argsort(traj_ids * span + turn_t)
    s_traj, s_turn, f = traj_ids[order], turn_t[order], _transform(values[order], mode)
    follows = (s_traj[1:] == s_traj[:-1]) & (s_turn[1:] == s_turn[:-1] + 1)
    s_ig = torch.full_like(f, float("nan"))
    s_ig[:-1] = torch.where(follows, f[1:] - f[:-1], s_ig[:-1])
    ig[order] = s_ig
    return _finite_or_nan(ig)


def _finite_or_nan(ig: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(ig), ig, torch.full_like(ig, float("nan")))
