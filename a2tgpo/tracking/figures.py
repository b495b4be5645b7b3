"""Figures of per-turn IG and clip ranges over the iterations (matplotlib, no display)."""

from __future__ import annotations

from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def per_turn_ig_figure(history: list[dict[str, Any]]):
    """IG mean (with std band) per turn index, against the iteration."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    turns = sorted({int(k) for h in history for k in h.get("ig_by_turn", {})})
    for k in turns:
        its = [h["iteration"] for h in history if str(k) in h.get("ig_by_turn", {})]
        mean = [
            h["ig_by_turn"][str(k)]["mean"] for h in history if str(k) in h.get("ig_by_turn", {})
        ]
        std = [h["ig_by_turn"][str(k)]["std"] for h in history if str(k) in h.get("ig_by_turn", {})]
        ax.plot(its, mean, marker="o", label=f"turn {k}")
        ax.fill_between(
            its,
            [m - s for m, s in zip(mean, std, strict=True)],
            [m + s for m, s in zip(mean, std, strict=True)],
            alpha=0.15,
        )
    ax.set_xlabel("iteration")
    ax.set_ylabel("information gain")
    ax.set_title("Per-turn IG (mean ± std)")
    if turns:
        ax.legend()
    fig.tight_layout()
    return fig


def clip_range_figure(history: list[dict[str, Any]]):
    """eps_low min / mean and eps_high max per turn index, at every iteration."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    turns = sorted({int(k) for h in history for k in h.get("by_turn", {})})
    for k in turns:
        rows = [h for h in history if str(k) in h.get("by_turn", {})]
        its = [h["iteration"] for h in rows]
        by = [h["by_turn"][str(k)] for h in rows]
        line = ax.plot(its, [b["eps_low_mean"] for b in by], marker="o", label=f"turn {k}")[0]
        ax.fill_between(
            its,
            [b["eps_low_min"] for b in by],
            [b["eps_high_max"] for b in by],
            color=line.get_color(),
            alpha=0.12,
        )
    ax.set_xlabel("iteration")
    ax.set_ylabel("clip range (eps)")
    ax.set_title("Per-turn clip range: mean eps_low, band from min eps_low to max eps_high")
    if turns:
        ax.legend()
    fig.tight_layout()
    return fig
