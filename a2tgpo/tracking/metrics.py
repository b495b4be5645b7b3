"""Per-iteration metrics, read off the stage manifests (pure functions, no tracker).

Every number the dashboard shows comes from a committed manifest's stats, so a
resumed run reports exactly what the crashed one would have, and each metric
traces back to its dataset. Names use `/` groups, turn indices as `turn_<k>`:

    reward, em, f1, turns_per_trajectory, finish/<reason>, action/<kind>
    skipped_too_long_prompts, tool_calls, tool_errors, tool_error_rate
    em/<data source>, em/hops_<h>, f1/...   (and eval/<mode>/..., eval_initial/<mode>/...)
    ig/turn_<k>/{mean,std,count}, ig_norm/turn_<k>/{mean,abs_mean}
    adv/turn_<k>/{mean,abs_mean}, eps_low/turn_<k>/{min,mean,max}, eps_high/...
    clip_fraction, clip_fraction/turn_<k>, loss/{first,last}, grad_norm, approx_kl
    mismatch/turn_<k>/abs_diff           (engine vs trainer log-probs)
    time/<stage>_s, throughput/{rollout,train}_tokens_per_s
"""

from __future__ import annotations

from typing import Any

from a2tgpo.data.manifest import Manifest


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
            out[f"ig/turn_{k}/{key}"] = float(m[key])
    return out


def advantage_metrics(stats: dict[str, Any]) -> dict[str, float]:
    out = {"estimator/grpo_warmup": float(bool(stats.get("grpo_warmup", False)))}
    for k, m in stats.get("by_turn", {}).items():
        out[f"ig_norm/turn_{k}/mean"] = m["ig_norm_mean"]
        out[f"ig_norm/turn_{k}/abs_mean"] = m["ig_norm_abs_mean"]
        out[f"adv/turn_{k}/mean"] = m["adv_mean"]
        out[f"adv/turn_{k}/abs_mean"] = m["adv_abs_mean"]
        for side in ("eps_low", "eps_high"):
            for agg in ("min", "mean", "max"):
                out[f"{side}/turn_{k}/{agg}"] = m[f"{side}_{agg}"]
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
