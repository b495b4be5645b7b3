"""The clipped policy loss with per-token clip ranges (spec section 5), KL and entropy.

Every tensor is per token, shaped [batch, tokens]. A turn's advantage and clip range
arrive already broadcast to its generated tokens; `mask` is 1 exactly on tokens the
policy generated (prompt, tool observations and padding are 0). Per token:

    rho = exp(logp - old_logp)            (ratio_level="turn": the turn's mean log-ratio)
    l   = max(-A rho, -A clamp(rho, 1 - eps_low, 1 + eps_high))
    l   = min(l, -c A)  where A < 0       (dual clip, c = dual_clip)
    l   = w l                             (optional `weights`, e.g. the rollout correction)
"""

from __future__ import annotations

from typing import Any

import torch

AGGREGATIONS = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean")
RATIO_LEVELS = ("token", "turn")
_LOG_RATIO_LIMIT = 20.0  # exp(20) ~ 5e8: keeps a stale token from producing inf


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    eps_low: torch.Tensor,
    eps_high: torch.Tensor,
    mask: torch.Tensor,
    *,
    dual_clip: float | None = 3.0,
    agg: str = "token-mean",
    ratio_level: str = "token",
    turn_ids: torch.Tensor | None = None,
    denominator: float | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Clipped surrogate loss and its statistics.

    `denominator` replaces the local normalizer (the mask count for token-mean, the
    number of sequences otherwise) so that gradient accumulation over micro-batches
    gives the loss of the whole mini-batch. `turn_ids` ([batch, tokens], the 0-based
    turn index of each generated token, -1 elsewhere) is required for
    ratio_level="turn" and adds per-turn-index clip fractions to the stats.
    `weights` (detached, e.g. `rollout_correction_weights`) multiply the per-token loss
    after clipping; None leaves the loss exactly as without them.
    """
    if agg not in AGGREGATIONS:
        raise ValueError(f"unknown agg {agg!r}; choose one of {AGGREGATIONS}")
    if ratio_level not in RATIO_LEVELS:
        raise ValueError(f"unknown ratio_level {ratio_level!r}; choose one of {RATIO_LEVELS}")
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (or None), got {dual_clip}")
    _check_shapes(
        logp,
        old_logp=old_logp,
        advantages=advantages,
        eps_low=eps_low,
        eps_high=eps_high,
        mask=mask,
        turn_ids=turn_ids,
        weights=weights,
    )
    valid = mask.bool()
    log_ratio = logp - old_logp.detach()
    if ratio_level == "turn":
        if turn_ids is None:
            raise ValueError('ratio_level="turn" needs turn_ids')
        log_ratio = turn_mean(log_ratio, turn_ids, valid)
    ratio = torch.exp(log_ratio.clamp(-_LOG_RATIO_LIMIT, _LOG_RATIO_LIMIT))

    adv = advantages.detach()
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    loss_tok = torch.maximum(unclipped, clipped)
    clip_active = valid & (clipped > unclipped)
    dual_active = torch.zeros_like(valid)
    if dual_clip is not None:
        bound = -adv * dual_clip
        dual_active = valid & (adv < 0) & (bound < loss_tok)
        loss_tok = torch.where(adv < 0, torch.minimum(loss_tok, bound), loss_tok)
    if weights is not None:  # skipped when absent so the loss stays bit-identical
        loss_tok = loss_tok * weights.detach()

    loss = aggregate(loss_tok, valid, agg, denominator)
    stats = _loss_stats(ratio, log_ratio, valid, clip_active, dual_active, adv, turn_ids)
    return loss, stats


def aggregate(
    values: torch.Tensor, mask: torch.Tensor, agg: str = "token-mean", denominator=None
) -> torch.Tensor:
    """Reduce per-token values over masked tokens (see AGGREGATIONS)."""
    valid = mask.bool()
    masked = torch.where(valid, values, torch.zeros_like(values))
    if agg == "token-mean":
        denom = valid.sum() if denominator is None else denominator
        return masked.sum() / _at_least_one(denom, values)
    tokens = valid.sum(-1)
    per_seq = masked.sum(-1)
    if agg == "seq-mean-token-mean":
        per_seq = per_seq / tokens.clamp(min=1)
    elif agg != "seq-mean-token-sum":
        raise ValueError(f"unknown agg {agg!r}; choose one of {AGGREGATIONS}")
    has_tokens = tokens > 0
    denom = has_tokens.sum() if denominator is None else denominator
    return torch.where(has_tokens, per_seq, torch.zeros_like(per_seq)).sum() / _at_least_one(
        denom, values
    )


def _at_least_one(denom, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(denom, dtype=like.dtype, device=like.device).clamp(min=1)


def turn_mean(values: torch.Tensor, turn_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Each valid token gets the mean of `values` over its (sequence, turn); others keep theirs."""
    batch, length = values.shape
    in_turn = valid & (turn_ids >= 0)
    span = int(turn_ids.max().item()) + 1 if turn_ids.numel() else 1
    key = torch.arange(batch, device=values.device).unsqueeze(1) * span + turn_ids.clamp(min=0)
    flat_key = key[in_turn]
    sums = torch.zeros(batch * span, dtype=values.dtype, device=values.device)
    sums = sums.index_add(0, flat_key, values[in_turn])
    counts = torch.bincount(flat_key, minlength=batch * span).clamp(min=1).to(values.dtype)
    means = (sums / counts)[key.reshape(-1)].reshape(batch, length)
    return torch.where(in_turn, means, values)


def low_var_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi || ref): exp(ref - logp) - (ref - logp) - 1, clamped."""
    diff = (ref_logp - logp).clamp(-_LOG_RATIO_LIMIT, _LOG_RATIO_LIMIT)
    return (torch.exp(diff) - diff - 1.0).clamp(-10.0, 10.0)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy of softmax(logits) over the last dimension."""
    return entropy_from_log_probs(torch.log_softmax(logits.float(), dim=-1))


def entropy_from_log_probs(log_probs: torch.Tensor) -> torch.Tensor:
    """Entropy from log-probs over the last dimension (a trainer that has them saves a softmax)."""
    return -(log_probs.exp() * log_probs).sum(-1)


def _check_shapes(logp: torch.Tensor, **others: torch.Tensor | None) -> None:
    if logp.ndim != 2:
        raise ValueError(f"per-token tensors must be [batch, tokens]; logp is {tuple(logp.shape)}")
    for name, tensor in others.items():
        if tensor is not None and tensor.shape != logp.shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, logp {tuple(logp.shape)}")


def _loss_stats(ratio, log_ratio, valid, clip_active, dual_active, adv, turn_ids) -> dict[str, Any]:
    with torch.no_grad():
        n = max(int(valid.sum()), 1)
        r = ratio[valid]
        lr = log_ratio[valid]
        stats: dict[str, Any] = {
            "tokens": int(valid.sum()),
            "clip_fraction": float(clip_active.sum()) / n,
            "clip_fraction_low": float((clip_active & (adv < 0)).sum()) / n,
            "clip_fraction_high": float((clip_active & (adv > 0)).sum()) / n,
            "dual_clip_fraction": float(dual_active.sum()) / n,
            "ratio_mean": float(r.mean()) if r.numel() else 1.0,
            "ratio_max": float(r.max()) if r.numel() else 1.0,
            "ratio_min": float(r.min()) if r.numel() else 1.0,
            "approx_kl": float((0.5 * lr * lr).mean()) if lr.numel() else 0.0,
        }
        if turn_ids is not None:
            tokens, (clipped,) = per_turn_means(turn_ids, valid, clip_active)
            stats["tokens_by_turn"] = tokens
            stats["clip_fraction_by_turn"] = clipped
    return stats


def per_turn_means(
    turn_ids: torch.Tensor, valid: torch.Tensor, *values: torch.Tensor
) -> tuple[list[int], list[list[float]]]:
    """Tokens per turn index, and each of `values`' mean over the valid tokens of each turn
    index (0 for an index with no token), as lists indexed by turn."""
    in_turn = valid & (turn_ids >= 0)
    ids = turn_ids[in_turn].long()
    size = int(ids.max()) + 1 if ids.numel() else 0
    tokens = torch.bincount(ids, minlength=size)
    means = [
        (torch.bincount(ids, weights=v[in_turn].double(), minlength=size) / tokens.clamp(min=1))
        for v in values
    ]
    return tokens.tolist(), [m.tolist() for m in means]
