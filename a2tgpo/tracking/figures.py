"""Figures of a run's per-turn statistics over the iterations (matplotlib, no display).

`run_figures(history)` gives every figure of a run, keyed by artifact path. Each figure
shows one quantity for all turn indices side by side: one colour per turn index (the
same colour for turn k in every figure), a legend, whole-number iteration ticks.

`history` is what `flows.reporting.Reporter` keeps, one entry per iteration:
`{"iteration": k, "ig_by_turn": <score-ig stats>, "by_turn": <advantages stats>}`
(`a2tgpo.scoring.trajectories.ig_stats`, `a2tgpo.stages.advantages.advantage_stats`).

Figures are built on their own Agg canvas, never through pyplot: nothing is registered
in pyplot's figure list, so a long run or a sweep leaks no figures and needs no close.
"""

from __future__ import annotations

from typing import Any

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

FIGURE_PATHS = (
    "figures/per_turn_ig.png",
    "figures/per_turn_advantages.png",
    "figures/clip_ranges.png",
)


def new_figure(width: float, height: float, rows: int = 1, cols: int = 1, **kw):
    """A fixed-size figure with its own Agg canvas and a rows x cols array of axes;
    constrained layout keeps titles, labels and outside legends inside the figure."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False, **kw)


def turn_style(k: int) -> dict[str, Any]:
    """Turn k's colour (tab10), dashed from turn 10 on so every turn stays distinct."""
    return {"color": colormaps["tab10"](k % 10), "linestyle": "-" if k < 10 else "--"}


def _turns(history: list[dict[str, Any]], field: str) -> list[int]:
    return sorted({int(k) for h in history for k in h.get(field, {})})


def _series(history: list[dict[str, Any]], field: str, k: int) -> tuple[list[int], list[dict]]:
    """(iterations, stats of turn k at each) over the iterations that have turn k."""
    rows = [h for h in history if str(k) in h.get(field, {})]
    return [int(h["iteration"]) for h in rows], [h[field][str(k)] for h in rows]


def iteration_axis(ax, history: list[dict[str, Any]]) -> None:
    """Whole-number iteration ticks, half an iteration of room either side."""
    its = [int(h["iteration"]) for h in history] or [0]
    ax.set_xlim(min(its) - 0.5, max(its) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("iteration")
    ax.grid(alpha=0.3)


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _turn_legend(fig: Figure, turns: list[int]) -> None:
    """One legend for the figure, outside the axes, listing every turn."""
    handles = [h for ax in fig.axes for h in ax.get_lines() if h.get_label().startswith("turn ")]
    unique = {h.get_label(): h for h in handles}
    if unique:
        fig.legend(list(unique.values()), list(unique), loc="outside right upper", fontsize=8)


def per_turn_ig_figure(history: list[dict[str, Any]]) -> Figure:
    """IG mean per turn index against the iteration, with a ±std band."""
    fig, ((ax,),) = new_figure(7.5, 4.2)
    turns = _turns(history, "ig_by_turn")
    for k in turns:
        its, stats = _series(history, "ig_by_turn", k)
        mean = [s["mean"] for s in stats]
        std = [s["std"] for s in stats]
        style = turn_style(k)
        ax.plot(its, mean, marker="o", label=f"turn {k}", **style)
        low = [m - s for m, s in zip(mean, std, strict=True)]
        high = [m + s for m, s in zip(mean, std, strict=True)]
        ax.fill_between(its, low, high, color=style["color"], alpha=0.15, linewidth=0)
    if not turns:
        _no_data(ax, "no IG scored (an outcome-only estimator?)")
    ax.axhline(0.0, color="0.5", linewidth=0.8, linestyle=":")
    iteration_axis(ax, history)
    ax.set_ylabel("information gain")
    ax.set_title("IG per turn: mean ± std (the answer turn has none)", fontsize=10)
    _turn_legend(fig, turns)
    return fig


AGGS = ("min", "mean", "max")  # the advantages stage's statistics of eps per turn index
ADVANTAGE_PANELS = (
    ("ig_norm_abs_mean", "mean |normalized IG|"),
    ("adv_mean", "mean advantage"),
    ("adv_abs_mean", "mean |advantage|"),
)


def advantage_figure(history: list[dict[str, Any]]) -> Figure:
    """Normalized IG and advantage per turn index, one panel per statistic."""
    fig, axes = new_figure(13.0, 4.0, cols=len(ADVANTAGE_PANELS))
    turns = _turns(history, "by_turn")
    for ax, (stat, title) in zip(axes[0], ADVANTAGE_PANELS, strict=True):
        for k in turns:
            its, stats = _series(history, "by_turn", k)
            ax.plot(its, [s[stat] for s in stats], marker="o", label=f"turn {k}", **turn_style(k))
        if not turns:
            _no_data(ax, "no advantages")
        iteration_axis(ax, history)
        ax.set_title(title, fontsize=10)
    axes[0][1].axhline(0.0, color="0.5", linewidth=0.8, linestyle=":")
    fig.suptitle("Normalized IG and advantage per turn index", fontsize=11)
    _turn_legend(fig, turns)
    return fig


def clip_range_figure(history: list[dict[str, Any]], base_eps: float | None = None) -> Figure:
    """The clip scale c = eps_low / base_eps per turn index: its min–max range (bars) and
    mean (markers) at every iteration, and each turn's range at the last iteration.

    IG is normalized per (prompt, turn index), so c's mean stays near 1 by construction:
    what tells the turns apart is the spread. Without `base_eps`, eps_low itself is shown.
    """
    scale, name = (base_eps, "clip scale c") if base_eps else (1.0, "eps_low")
    fig, ((left, right),) = new_figure(
        12.5, 4.4, cols=2, sharey=True, gridspec_kw={"width_ratios": [3, 2]}
    )
    turns = _turns(history, "by_turn")
    width = 0.6 / max(len(turns), 1)  # turns side by side within an iteration
    for j, k in enumerate(turns):
        its, stats = _series(history, "by_turn", k)
        x = [i + (j - (len(turns) - 1) / 2) * width for i in its]
        low, mean, high = ([s[f"eps_low_{a}"] / scale for s in stats] for a in AGGS)
        style = turn_style(k)
        left.vlines(x, low, high, color=style["color"], linewidth=3, alpha=0.45)
        left.plot(x, mean, marker="o", markersize=4, label=f"turn {k}", **style)
    iteration_axis(left, history)
    left.set_ylabel(name)
    left.set_title(f"{name} per turn: min–max (bars), mean (line)", fontsize=10)
    _last_iteration_panel(right, history, turns, scale)
    for ax in (left, right):
        if base_eps:
            ax.axhline(1.0, color="0.5", linewidth=0.8, linestyle=":")  # c = 1: a fixed clip
        if not turns:
            _no_data(ax, "no clip ranges")
    fig.suptitle(
        f"Per-turn clip range: eps = {base_eps:g} x c" if base_eps else "Per-turn eps_low",
        fontsize=11,
    )
    _turn_legend(fig, turns)
    return fig


def _last_iteration_panel(ax, history, turns: list[int], scale: float) -> None:
    """Box-like glyphs at the last iteration: a bar from min to max, a tick at the mean
    (on the y axis of the panel beside it)."""
    last = history[-1] if history else {"iteration": 0}
    by_turn = last.get("by_turn", {})
    for k in turns:
        if str(k) not in by_turn:
            continue
        low, mean, high = (by_turn[str(k)][f"eps_low_{a}"] / scale for a in AGGS)
        color = turn_style(k)["color"]
        (box,) = ax.bar(k, high - low, bottom=low, width=0.5, color=color, alpha=0.35)
        box.sticky_edges.y.clear()  # a bar's base would otherwise clamp the y range
        ax.hlines(mean, k - 0.25, k + 0.25, color=color, linewidth=2.5)
    ax.set_xticks(turns, [f"turn {k}" for k in turns])
    ax.set_xlim(min(turns, default=0) - 0.6, max(turns, default=0) + 0.6)
    ax.set_title(f"at iteration {last['iteration']}: min–max, mean", fontsize=10)
    ax.grid(alpha=0.3, axis="y")


def run_figures(history: list[dict[str, Any]], base_eps: float | None = None) -> dict[str, Figure]:
    """Every figure of a run by artifact path (`FIGURE_PATHS`), for `RunTracker.log_figure`.
    `base_eps` is the run's `estimator.clip_eps_low` (the clip range before scaling)."""
    figures = (
        per_turn_ig_figure(history),
        advantage_figure(history),
        clip_range_figure(history, base_eps),
    )
    return dict(zip(FIGURE_PATHS, figures, strict=True))
