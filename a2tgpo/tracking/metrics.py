"""Per-iteration metrics, read off the stage manifests (pure functions, no tracker).

Every number the dashboard shows comes from a committed manifest's stats, so a
resumed run reports exactly what the crashed one would have, and each metric
traces back to its dataset. Names use `/` groups; a per-turn metric ends in the turn
index, `<quantity>/turn_<k>`, because MLflow puts charts in one section per key prefix
before the last `/`: one section per quantity then holds every turn side by side.

    reward, em, f1, turns_per_trajectory, finish/<reason>, action/<kind>
    skipped_too_long_prompts, tool_calls, tool_errors, tool_error_rate
    em/<data source>, em/hops_<h>, f1/...   (and eval/<mode>/..., eval_initial/<mode>/...)
    ig/{mean,std,count}/turn_<k>, ig_norm/{mean,abs_mean}/turn_<k>
    adv/{mean,abs_mean}/turn_<k>, eps_low/{min,mean,max}/turn_<k>, eps_high/...
    clip_fraction, clip_fraction/turn_<k>, loss/{first,last}, grad_norm, approx_kl
    mismatch/{abs_diff,diff}/turn_<k>    (engine vs trainer log-probs)
    correction/{weight_mean,capped_fraction}[/turn_<k>]   (rollout correction)
    time/<stage>_s, throughput/{rollout,train}_tokens_per_s
"""

from __future__ import annotations

from typing import Any

from a2tgpo.data.manifest import Manifest

# Every per-turn quantity: its metrics are `<quantity>/turn_<k>` (`turn_key`). The
# train step names its own (`a2tgpo.training.worker`, `a2tgpo.training.update`).
PER_TURN_QUANTITIES = (
    "ig/mean",
    "ig/std",
    "ig/count",
    "ig_norm/mean",
    "ig_norm/abs_mean",
    "adv/mean",
    "adv/abs_mean",
    *(f"{side}/{agg}" for side in ("eps_low", "eps_high") for agg in ("min", "mean", "max")),
    "clip_fraction",
    "mismatch/abs_diff",
    "mismatch/diff",
    "correction/weight_mean",
    "correction/capped_fraction",
)
TURN_PREFIX = "turn_"


def turn_key(quantity: str, k: int | str) -> str:
    """The metric of `quantity` at turn index k: the index last, so MLflow groups by quantity."""
    return f"{quantity}/{TURN_PREFIX}{k}"


def split_turn_key(key: str) -> tuple[str, int] | None:
    """(quantity, turn index) of a per-turn metric key; None for any other key."""
    quantity, _, last = key.rpartition("/")
    index = last.removeprefix(TURN_PREFIX)
    if not quantity or last == index or not index.isdigit():
        return None
    return quantity, int(index)


def rollout_metrics(stats: dict[str, Any], prefix: str = "") -> dict[str, float]:
    total = max(stats.get("trajectories", 0), 1)
    out = {
        f"{prefix}reward": stats["reward_mean"],
        f"{prefix}em": stats["em_mean"],
        f"{prefix}f1": stats["f1_mean"],
        f"{prefix}turns_per_trajectory": stats["turns_mean"],
        f"{prefix}generated_tokens": float(stats["generated_tokens"]),
    }
    out |= _rollout_counts(stats, prefix)
    for reason, count in stats.get("finish_reasons", {}).items():
        out[f"{prefix}finish/{reason}"] = count / total
    for kind, count in stats.get("actions", {}).items():
        out[f"{prefix}action/{kind}"] = float(count)
    for source, m in stats.get("by_source", {}).items():
        out[f"{prefix}em/{source}"] = m["em"]
        out[f"{prefix}f1/{source}"] = m["f1"]
    for hops, m in stats.get("by_hops", {}).items():
        out[f"{prefix}em/hops_{hops}"] = m["em"]
        out[f"{prefix}f1/hops_{hops}"] = m["f1"]
    return out


def _rollout_counts(stats: dict[str, Any], prefix: str) -> dict[str, float]:
    """Skipped prompts and tool errors (absent from manifests committed before they were
    counted: a resumed run then logs nothing rather than a false zero)."""
    out = {
        f"{prefix}{key}": float(stats[key])
        for key in ("skipped_too_long_prompts", "tool_calls", "tool_errors")
        if key in stats
    }
    if stats.get("tool_calls"):
        out[f"{prefix}tool_error_rate"] = stats["tool_errors"] / stats["tool_calls"]
    return out


def ig_metrics(stats: dict[str, Any]) -> dict[str, float]:
    out = {"ig/missing": float(stats.get("ig_missing", 0))}
    for k, m in stats.get("ig_by_turn", {}).items():
        for key in ("mean", "std", "count"):
            out[turn_key(f"ig/{key}", k)] = float(m[key])
    return out


def advantage_metrics(stats: dict[str, Any]) -> dict[str, float]:
    out = {"estimator/grpo_warmup": float(bool(stats.get("grpo_warmup", False)))}
    for k, m in stats.get("by_turn", {}).items():
        out[turn_key("ig_norm/mean", k)] = m["ig_norm_mean"]
        out[turn_key("ig_norm/abs_mean", k)] = m["ig_norm_abs_mean"]
        out[turn_key("adv/mean", k)] = m["adv_mean"]
        out[turn_key("adv/abs_mean", k)] = m["adv_abs_mean"]
        for side in ("eps_low", "eps_high"):
            for agg in ("min", "mean", "max"):
                out[turn_key(f"{side}/{agg}", k)] = m[f"{side}_{agg}"]
    return out


def train_metrics(stats: dict[str, Any]) -> dict[str, float]:
    """The train step's metrics, named by the worker that measured them."""
    return dict(stats.get("metrics", {}))


# Which metrics each stage's manifest gives, by the stage names of `a2tgpo.stages`.
STAGE_METRICS = {
    "rollout": rollout_metrics,
    "score-ig": ig_metrics,
    "advantages": advantage_metrics,
    "train-step": train_metrics,
}


def stage_time_metric(stage: str) -> str:
    """`time/<stage>_s`, with the stage's name as a metric word (score-ig -> score_ig)."""
    return f"time/{stage.replace('-', '_')}_s"


def iteration_metrics(
    manifests: dict[str, Manifest], seconds: dict[str, float]
) -> dict[str, float]:
    """All metrics of one iteration from its stages' manifests and wall times (by stage)."""
    out: dict[str, float] = {}
    for stage, metrics in STAGE_METRICS.items():
        if stage in manifests:
            out |= metrics(manifests[stage].stats)
    for stage, s in seconds.items():
        out[stage_time_metric(stage)] = s
    if "rollout" in manifests and "staleness" in manifests["rollout"].stats:
        # versions between the rollout policy and the trained one (pipeline.overlap)
        out["rollout/staleness"] = manifests["rollout"].stats["staleness"]
    if seconds.get("rollout") and "rollout" in manifests:
        tokens = manifests["rollout"].stats["generated_tokens"]
        out["throughput/rollout_tokens_per_s"] = tokens / seconds["rollout"]
    return {k: float(v) for k, v in out.items() if v is not None}


def _stats(manifests: dict[str, Manifest], stage: str, key: str) -> dict:
    return manifests[stage].stats.get(key, {}) if stage in manifests else {}


def per_turn_table(manifests: dict[str, Manifest]) -> list[dict[str, Any]]:
    """One row per turn index: IG, normalized IG, advantage, clip range, clip fraction."""
    ig = _stats(manifests, "score-ig", "ig_by_turn")
    adv = _stats(manifests, "advantages", "by_turn")
    clip = _stats(manifests, "train-step", "clip_fraction_by_turn")
    rows = []
    for k in sorted(set(ig) | set(adv), key=int):
        a = adv.get(k, {})
        rows.append(
            {
                "turn": int(k),
                "turns": a.get("count", 0),
                "ig_mean": round(ig.get(k, {}).get("mean", float("nan")), 5),
                "ig_std": round(ig.get(k, {}).get("std", float("nan")), 5),
                "abs_ig_norm": round(a.get("ig_norm_abs_mean", 0.0), 4),
                "adv_mean": round(a.get("adv_mean", 0.0), 4),
                "abs_adv": round(a.get("adv_abs_mean", 0.0), 4),
                "eps_low_min": round(a.get("eps_low_min", 0.0), 4),
                "eps_low_mean": round(a.get("eps_low_mean", 0.0), 4),
                "eps_high_max": round(a.get("eps_high_max", 0.0), 4),
                "clip_fraction": round(clip.get(k, 0.0), 4),
            }
        )
    return rows
