"""Per-iteration metrics, read off the stage manifests (pure functions, no tracker).

Every number the dashboard shows comes from a committed manifest's stats, so a
resumed run reports exactly what the crashed one would have, and each metric
traces back to its dataset. Names use `/` groups, turn indices as `turn_<k>`:

    reward, em, f1, turns_per_trajectory, finish/<reason>, action/<kind>
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
    for reason, count in stats.get("finish_reasons", {}).items():
        out[f"{prefix}finish/{reason}"] = count / total
    for kind, count in stats.get("actions", {}).items():
        out[f"{prefix}action/{kind}"] = float(count)
    for source, m in stats.get("by_source", {}).items():
        out[f"{prefix}em/{source}"] = m["em"]
        out[f"{prefix}f1/{source}"] = m["f1"]
    return out


def ig_metrics(stats: dict[str, Any]) -> dict[str, float]:
    out = {"ig/missing": float(stats.get("ig_missing", 0))}
    for k, m in stats.get("ig_by_turn", {}).items():
        for key in ("mean", "std", "count"):
            out[f"ig/turn_{k}/{key}"] = float(m[key])
    return out


def advantage_metrics(stats: dict[str, Any]) -> dict[str, float]:
    out = {}
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
    out = {
        "loss/first": stats["loss_first"],
        "loss/last": stats["loss_last"],
        "grad_norm": stats["grad_norm_mean"],
        "clip_fraction": stats.get("clip_fraction", 0.0),
        "clip_fraction/low": stats.get("clip_fraction_low", 0.0),
        "clip_fraction/high": stats.get("clip_fraction_high", 0.0),
        "clip_fraction/dual": stats.get("dual_clip_fraction", 0.0),
        "approx_kl": stats.get("approx_kl", 0.0),
        "throughput/train_tokens_per_s": stats.get("tokens_per_s", 0.0),
        "train/skipped_too_long": float(stats.get("skipped_too_long", 0)),
    }
    for k, frac in stats.get("clip_fraction_by_turn", {}).items():
        out[f"clip_fraction/turn_{k}"] = frac
    for key, value in stats.get(
        "mismatch", {}
    ).items():  # "turn3_abs_diff" -> mismatch/turn_3/abs_diff
        turn, _, name = key.partition("_")
        out[f"mismatch/turn_{turn.removeprefix('turn')}/{name}"] = value
    return out


def iteration_metrics(
    manifests: dict[str, Manifest], seconds: dict[str, float]
) -> dict[str, float]:
    """All metrics of one iteration from its stage manifests and stage wall times."""
    out: dict[str, float] = {}
    if "trajectories" in manifests:
        out |= rollout_metrics(manifests["trajectories"].stats)
    if "scored" in manifests:
        out |= ig_metrics(manifests["scored"].stats)
    if "advantaged" in manifests:
        out |= advantage_metrics(manifests["advantaged"].stats)
    if "checkpoint" in manifests:
        out |= train_metrics(manifests["checkpoint"].stats)
    for stage, s in seconds.items():
        out[f"time/{stage}_s"] = s
    if seconds.get("rollout") and "trajectories" in manifests:
        tokens = manifests["trajectories"].stats["generated_tokens"]
        out["throughput/rollout_tokens_per_s"] = tokens / seconds["rollout"]
    return {k: float(v) for k, v in out.items() if v is not None}


def per_turn_table(manifests: dict[str, Manifest]) -> list[dict[str, Any]]:
    """One row per turn index: IG, normalized IG, advantage, clip range, clip fraction."""
    ig = manifests["scored"].stats.get("ig_by_turn", {}) if "scored" in manifests else {}
    adv = manifests["advantaged"].stats.get("by_turn", {}) if "advantaged" in manifests else {}
    clip = (
        manifests["checkpoint"].stats.get("clip_fraction_by_turn", {})
        if "checkpoint" in manifests
        else {}
    )
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
