"""Off-policy rollout correction: importance weights between trainer and rollout engine.

The rollout engine (vLLM) and the trainer compute log-probs with different kernels,
precisions and sometimes a stale policy, so the tokens were sampled from pi_rollout,
not from the pi_old the PPO ratio assumes. Each generated token (mask 1) gets

    log w = old_logp - rollout_logp                          (level="token")
    log w = mean of (old_logp - rollout_logp) over the turn  (level="turn": the turn's
                                                              geometric mean, as `turn_mean`)
    w     = exp(clamp(log w, -20, 20))

and the applied weight, by mode, with cap C > 1:

    none:  1
    tis:   min(w, C)                   (truncated IS: bounded variance, small bias)
    mis:   w if w <= C else 0          (masked IS: drops the token, or the whole turn at
                                        level="turn", where the engines disagree too much)

"capped" marks the tokens with w > C (truncated by tis, dropped by mis). The weights
carry no gradient: they multiply the per-token policy loss (`policy_loss(weights=...)`).
Tensors are [batch, tokens]; off-mask tokens get weight 0 (1 for "none"), which the
loss mask ignores anyway.
"""

from __future__ import annotations

from typing import Any

import torch

from a2tgpo.algo.loss import _LOG_RATIO_LIMIT, RATIO_LEVELS, per_turn_means, turn_mean

CORRECTION_MODES = ("none", "tis", "mis")


def rollout_correction_weights(
    old_logp: torch.Tensor,
    rollout_logp: torch.Tensor,
    mask: torch.Tensor,
    *,
    mode: str,
    cap: float,
    level: str = "token",
    turn_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """(weights, capped, stats) of the correction; see the module docstring.

    `turn_ids` ([batch, tokens], 0-based turn index of generated tokens, -1 elsewhere)
    is required for level="turn" and adds per-turn-index stats: `tokens_by_turn`,
    `weight_mean_by_turn`, `capped_fraction_by_turn`.
    """
    _check_arguments(old_logp, rollout_logp, mask, mode, cap, level, turn_ids)
    valid = mask.bool()
    with torch.no_grad():
        # Off-mask both log-probs are 0 by convention; zeroing keeps garbage out of exp.
        log_w = torch.where(valid, old_logp - rollout_logp, torch.zeros_like(old_logp))
        if level == "turn":
            log_w = turn_mean(log_w, turn_ids, valid)
        w = torch.exp(log_w.clamp(-_LOG_RATIO_LIMIT, _LOG_RATIO_LIMIT))
        capped = valid & (w > cap)
        if mode == "none":
            weights = torch.ones_like(w)
        else:
            kept = w.clamp(max=cap) if mode == "tis" else torch.where(capped, 0.0, w)
            weights = torch.where(valid, kept, torch.zeros_like(kept))
        stats = _correction_stats(weights, capped, valid, turn_ids)
    return weights, capped, stats


def _check_arguments(old_logp, rollout_logp, mask, mode, cap, level, turn_ids) -> None:
    if mode not in CORRECTION_MODES:
        raise ValueError(f"unknown rollout correction {mode!r}; choose one of {CORRECTION_MODES}")
    if level not in RATIO_LEVELS:
        raise ValueError(f"unknown correction level {level!r}; choose one of {RATIO_LEVELS}")
    if not cap > 1.0:
        raise ValueError(f"the correction cap must be > 1, got {cap}")
    if old_logp.ndim != 2:
        raise ValueError(f"per-token tensors must be [batch, tokens]; old_logp is {old_logp.shape}")
    others = {"rollout_logp": rollout_logp, "mask": mask, "turn_ids": turn_ids}
    for name, tensor in others.items():
        if tensor is not None and tensor.shape != old_logp.shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)}, old_logp {tuple(old_logp.shape)}"
            )
    if level == "turn" and turn_ids is None:
        raise ValueError('a turn-level correction (level="turn") needs turn_ids')


def _correction_stats(weights, capped, valid, turn_ids) -> dict[str, Any]:
    n = int(valid.sum())
    stats: dict[str, Any] = {
        "tokens": n,
        # An empty batch reports the neutral weight, as policy_loss reports ratio 1.
        "weight_mean": float(weights[valid].double().mean()) if n else 1.0,
        "capped_fraction": float(capped.sum()) / max(n, 1),
    }
    if turn_ids is not None:
        tokens, (weight, capped_share) = per_turn_means(turn_ids, valid, weights, capped)
        stats["tokens_by_turn"] = tokens
        stats["weight_mean_by_turn"] = weight
        stats["capped_fraction_by_turn"] = capped_share
    return stats
