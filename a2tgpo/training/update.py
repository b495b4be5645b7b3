"""One policy update: old log-probs, then PPO epochs over mini-batches of micro-batches.

The loss is `a2tgpo.algo.policy_loss` on [sequences, tokens] views of each packed
micro-batch, with the mini-batch's normalizer as `denominator`, so accumulating the
micro-batches' gradients gives the mini-batch's loss exactly. DeepSpeed averages
gradients over data-parallel ranks, so each rank's loss is multiplied by the world
size. Log-probs are computed only at the positions that predict generated tokens,
which keeps the vocabulary projection off prompt and tool tokens. In the RL update,
old, new and reference log-probs all come from logits divided by the same
`temperature` (`a2tgpo.engines.options.trainer_temperature`), so the ratio, the KL
and the entropy are of the distribution the rollout sampled from (verl's rule); the
SFT warm-start is plain likelihood (temperature 1).

With `train.rollout_correction` = tis/mis each token's loss is also weighted by the
old policy's over the rollout engine's probability (`a2tgpo.algo.correction`), from the
old log-probs and the trajectories' stored `rollout_logprobs`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from a2tgpo.algo import (
    aggregate,
    entropy_from_log_probs,
    low_var_kl,
    policy_loss,
    rollout_correction_weights,
)
from a2tgpo.config import TrainConfig
from a2tgpo.training.batching import MicroBatch, shard_for_rank, split_mini_batches


def token_logprobs(model, mb: MicroBatch, *, with_entropy: bool = False, temperature: float = 1.0):
    """Log-probs (and entropies) of the generated tokens under softmax(logits / temperature),
    as [rows, longest] tensors.

    One forward through the model itself (a DeepSpeed engine or an HF model): ZeRO-3
    gathers parameters in module hooks, and every rank must run the same sequence of
    them, so the model is never entered through a submodule. The vocabulary projection
    runs only at the columns that predict some generated token (`logits_to_keep`).
    """
    module = getattr(model, "module", model)  # a DeepSpeed engine wraps the HF model
    device = next(module.parameters()).device
    mask = mb.padded("mask", dtype=torch.bool)
    rows, cols = torch.nonzero(mask, as_tuple=True)
    if cols.numel() and int(cols.min()) == 0:
        raise ValueError("a generated token at a trajectory's first position has no context")
    keep, slot = torch.unique(cols - 1, return_inverse=True)
    out = model(
        input_ids=mb.input_ids.to(device),
        attention_mask=mb.attention_mask.to(device),
        use_cache=False,
        logits_to_keep=keep.to(device),
    )
    logits = out.logits[rows.to(device), slot.to(device)].float()
    if temperature != 1.0:  # skipped at 1 so raw log-probs stay bit-identical
        logits = logits / temperature
    log_probs = torch.log_softmax(logits, dim=-1)
    targets = mb.input_ids[rows, cols].to(device).unsqueeze(1)
    picked = log_probs.gather(1, targets).squeeze(1)
    index = (rows.to(device), cols.to(device))
    result = torch.zeros(mask.shape, device=device, dtype=picked.dtype).index_put(index, picked)
    entropy = None
    if with_entropy:
        ent = entropy_from_log_probs(log_probs)
        entropy = torch.zeros(mask.shape, device=device, dtype=ent.dtype).index_put(index, ent)
    return result, entropy


@torch.no_grad()
def frozen_logprobs(
    model, batches: list[MicroBatch], temperature: float = 1.0
) -> dict[int, torch.Tensor]:
    """Log-probs under a model that does not change (old policy, reference), by batch id."""
    return {
        id(mb): token_logprobs(model, mb, temperature=temperature)[0].detach() for mb in batches
    }


@dataclass
class UpdateStats:
    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    by_turn: dict[int, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0.0, 0.0]))
    tokens: int = 0
    seconds: float = 0.0
    # The rollout correction's token-weighted sums ("tokens", "weight", "capped"), overall
    # and per turn index; empty while the correction is off.
    correction: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    correction_by_turn: dict[int, dict[str, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )

    def add(self, stats: dict[str, Any]) -> None:
        n = stats["tokens"]
        self.tokens += n
        for key in (
            "clip_fraction",
            "clip_fraction_low",
            "clip_fraction_high",
            "dual_clip_fraction",
            "approx_kl",
            "ratio_mean",
        ):
            self.sums[key] += stats[key] * n
        if "kl_ref" in stats:  # the KL to the reference policy, when train.kl_coef > 0
            self.sums["kl_ref"] += stats["kl_ref"] * n
        for k, (frac, count) in enumerate(
            zip(
                stats.get("clip_fraction_by_turn", []), stats.get("tokens_by_turn", []), strict=True
            )
        ):
            self.by_turn[k][0] += frac * count
            self.by_turn[k][1] += count
        if "correction_tokens" in stats:
            self._add_correction(stats)

    def _add_correction(self, stats: dict[str, Any]) -> None:
        n = stats["correction_tokens"]
        self.correction["tokens"] += n
        self.correction["weight"] += stats["correction_weight_mean"] * n
        self.correction["capped"] += stats["correction_capped_fraction"] * n
        by_turn = zip(
            stats.get("correction_tokens_by_turn", []),
            stats.get("correction_weight_mean_by_turn", []),
            stats.get("correction_capped_fraction_by_turn", []),
            strict=True,
        )
        for k, (count, weight, capped) in enumerate(by_turn):
            self.correction_by_turn[k]["tokens"] += count
            self.correction_by_turn[k]["weight"] += weight * count
            self.correction_by_turn[k]["capped"] += capped * count

    def correction_metrics(self) -> dict[str, float]:
        """The correction's token-weighted means under MLflow names; {} when it was off."""
        if not self.correction:
            return {}
        metrics = _correction_means(self.correction)
        for k, sums in sorted(self.correction_by_turn.items()):
            metrics |= _correction_means(sums, f"/turn_{k}")
        return metrics

    def summary(self) -> dict[str, Any]:
        n = max(self.tokens, 1)
        return {
            "loss_first": self.losses[0] if self.losses else float("nan"),
            "loss_last": self.losses[-1] if self.losses else float("nan"),
            "losses": self.losses,
            "grad_norm_mean": float(np.mean(self.grad_norms)) if self.grad_norms else 0.0,
            **{key: value / n for key, value in self.sums.items()},
            "clip_fraction_by_turn": {
                str(k): c / max(t, 1) for k, (c, t) in sorted(self.by_turn.items())
            },
            "trained_tokens": self.tokens,
            "seconds": self.seconds,
            "correction": self.correction_metrics(),
        }


def _correction_means(sums: dict[str, float], suffix: str = "") -> dict[str, float]:
    n = sums["tokens"]
    # A turn index no sample of this rank reached has no tokens: the neutral weight 1.
    return {
        f"correction/weight_mean{suffix}": sums["weight"] / n if n else 1.0,
        f"correction/capped_fraction{suffix}": sums["capped"] / n if n else 0.0,
    }


def mini_batch_denominator(group: list[MicroBatch], agg: str) -> float:
    if agg == "token-mean":
        return float(sum(mb.loss_tokens for mb in group))
    return float(sum(int(s.mask.any()) for mb in group for s in mb.samples))


def micro_batch_loss(
    engine,
    mb: MicroBatch,
    old,
    ref,
    train: TrainConfig,
    denominator: float,
    temperature: float = 1.0,
):
    """The loss of one micro-batch (already divided by the mini-batch's denominator)."""
    device = next(engine.module.parameters()).device
    logp, entropy = token_logprobs(
        engine, mb, with_entropy=train.entropy_coef > 0, temperature=temperature
    )
    mask = mb.padded("mask", dtype=torch.bool).to(device)
    turn_ids = mb.padded("turn_ids", fill=-1, dtype=torch.long).to(device)
    old = old.to(device)
    weights, correction = None, {}  # None: policy_loss skips the multiply (bit-identical)
    if train.rollout_correction != "none":
        weights, correction = correction_weights(mb, old, mask, turn_ids, train)
    loss, stats = policy_loss(
        logp,
        old,
        mb.padded("advantage").to(device),
        mb.padded("eps_low").to(device),
        mb.padded("eps_high").to(device),
        mask,
        dual_clip=train.dual_clip,
        agg=train.loss_agg,
        ratio_level=train.ratio_level,
        turn_ids=turn_ids,
        denominator=denominator,
        weights=weights,
    )
    if train.kl_coef > 0:
        per_token = low_var_kl(logp, ref.to(device))
        kl = aggregate(per_token, mask, train.loss_agg, denominator)
        loss = loss + train.kl_coef * kl
        stats["kl_ref"] = float((per_token * mask).sum() / mask.sum().clamp(min=1))
    if entropy is not None:
        loss = loss - train.entropy_coef * aggregate(entropy, mask, train.loss_agg, denominator)
    return loss, stats | correction


def correction_weights(mb: MicroBatch, old, mask, turn_ids, train: TrainConfig):
    """The rollout correction's per-token weights and its stats (keys `correction_*`)."""
    missing = [s.index for s in mb.samples if s.rollout_logprobs is None]
    if missing:
        raise ValueError(
            f"train.rollout_correction={train.rollout_correction!r} needs the rollout engine's "
            f"log-probs (rollout.logprobs) in the trajectory row's rollout_logprobs column; "
            f"rows {missing[:5]} have none"
        )
    rollout = mb.padded("rollout_logprobs").to(device=old.device, dtype=old.dtype)
    weights, _, stats = rollout_correction_weights(
        old,
        rollout,
        mask,
        mode=train.rollout_correction,
        cap=train.correction_cap,
        level=train.ratio_level,
        turn_ids=turn_ids,
    )
    return weights, {f"correction_{key}": value for key, value in stats.items()}


def idle_pass(engine) -> torch.Tensor:
    """A forward whose loss is zero: keeps ZeRO-3's collectives in step across ranks."""
    device = next(engine.module.parameters()).device
    ids = torch.zeros(1, 2, dtype=torch.long, device=device)
    keep = torch.zeros(1, dtype=torch.long, device=device)
    return engine(input_ids=ids, use_cache=False, logits_to_keep=keep).logits.sum() * 0.0


def run_update(
    engine,
    batches: list[MicroBatch],
    old: dict[int, torch.Tensor],
    ref: dict[int, torch.Tensor] | None,
    train: TrainConfig,
    rank: int,
    world: int,
    temperature: float = 1.0,
) -> UpdateStats:
    """PPO epochs x mini-batches of optimizer steps; returns the update's statistics.

    `temperature` divides the logits of the new log-probs; `old` and `ref` must have
    been computed with the same one (`frozen_logprobs`).
    """
    stats = UpdateStats()
    start = time.perf_counter()
    engine.train()
    for _ in range(train.ppo_epochs):
        for group in split_mini_batches(batches, train.mini_batches):
            denominator = mini_batch_denominator(group, train.loss_agg)
            mine = shard_for_rank(group, rank, world)
            step_loss = 0.0
            for i, mb in enumerate(mine):
                engine.set_gradient_accumulation_boundary(i == len(mine) - 1)
                if mb is None:
                    loss = idle_pass(engine)
                else:
                    reference = ref[id(mb)] if ref else None
                    loss, loss_stats = micro_batch_loss(
                        engine, mb, old[id(mb)], reference, train, denominator, temperature
                    )
                    stats.add(loss_stats)
                    step_loss += float(loss)
                engine.backward(loss * world, scale_wrt_gas=False)
            engine.step()
            stats.losses.append(_all_reduce_sum(step_loss, next(engine.module.parameters()).device))
            norm = engine.get_global_grad_norm()
            stats.grad_norms.append(float(norm) if norm is not None else 0.0)
    stats.seconds = time.perf_counter() - start
    return stats


def run_sft(engine, batches: list[MicroBatch], epochs: int, rank: int, world: int, seed: int):
    """Likelihood training on the generated tokens: one optimizer step per `world` micro-batches."""
    stats = UpdateStats()
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    engine.train()
    device = next(engine.module.parameters()).device
    for _ in range(epochs):
        order = [batches[i] for i in rng.permutation(len(batches))]
        for first in range(0, len(order), world):
            group = order[first : first + world]
            mb = group[rank] if rank < len(group) else None
            engine.set_gradient_accumulation_boundary(True)
            if mb is None:
                loss = idle_pass(engine)
            else:
                logp, _ = token_logprobs(engine, mb)
                mask = mb.padded("mask", dtype=torch.bool).to(device)
                loss = -aggregate(logp, mask, "token-mean")
                stats.tokens += int(mask.sum())
            engine.backward(loss, scale_wrt_gas=False)
            engine.step()
            stats.losses.append(_all_reduce_sum(float(loss), device) / world)
    stats.seconds = time.perf_counter() - start
    return stats


def _all_reduce_sum(value: float, device: torch.device) -> float:
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return float(t)
