"""The per-turn comparison of several runs (a sweep's members, or any runs of one
experiment), drawn from their MLflow metric histories.

One row of panels per quantity, one column per turn index, one line per run: colour by
preset, line style and marker by seed, so GRPO and A²TGPO read side by side for every
turn. Rows: IG mean, mean |normalized IG|, mean |advantage|, the clip scale c (mean
line, min–max band) and the clip fraction. The sweep logs it on its parent MLflow run as
`comparison/per_turn.png` (`flows.sweep.report`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from a2tgpo.tracking.figures import new_figure
from a2tgpo.tracking.metrics import split_turn_key, turn_key

CLIP = "eps_low"  # c = eps_low / estimator.clip_eps_low (eps_high scales by the same c)
ROWS = (  # (quantity, panel label); CLIP stands for its min/mean/max
    ("ig/mean", "IG mean"),
    ("ig_norm/abs_mean", "mean |IG norm|"),
    ("adv/abs_mean", "mean |advantage|"),  # the mean is ~0 per turn by construction
    (CLIP, "clip scale c"),
    ("clip_fraction", "clip fraction"),
)
LOADED = {q for q, _ in ROWS if q != CLIP} | {f"{CLIP}/{a}" for a in ("min", "mean", "max")}
MAX_TURNS = 6  # columns: beyond this the figure would be unreadable at a fixed size
SEED_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))


@dataclass
class RunCurves:
    """One run's per-turn histories: {metric key: {step: value}}."""

    preset: str
    seed: int
    histories: dict[str, dict[int, float]] = field(default_factory=dict)
    clip_eps_low: float | None = None  # the run's base clip range (its MLflow param)

    @property
    def label(self) -> str:
        return f"{self.preset} s{self.seed}"

    def turns(self) -> set[int]:
        return {split[1] for key in self.histories if (split := split_turn_key(key))}


def load_run_curves(client, members: list[Any]) -> list[RunCurves]:
    """The per-turn histories of the finished runs among `members` (objects with
    `mlflow_run_id`, `preset`, `seed`, `status`: `a2tgpo.analysis.compare.MemberResult`)."""
    out = []
    for m in members:
        if not m.mlflow_run_id or m.status != "FINISHED":
            continue
        run = client.get_run(m.mlflow_run_id)
        keys = [k for k in run.data.metrics if (s := split_turn_key(k)) and s[0] in LOADED]
        histories = {
            k: {h.step: h.value for h in client.get_metric_history(m.mlflow_run_id, k)}
            for k in keys
        }
        eps = run.data.params.get("estimator.clip_eps_low")
        out.append(RunCurves(m.preset, m.seed, histories, float(eps) if eps else None))
    return out


def run_styles(runs: list[RunCurves]) -> list[dict[str, Any]]:
    """Colour per preset (in order of appearance), line style and marker per seed."""
    presets = list(dict.fromkeys(r.preset for r in runs))
    seeds = sorted({r.seed for r in runs})
    styles = []
    for r in runs:
        ls, marker = SEED_STYLES[seeds.index(r.seed) % len(SEED_STYLES)]
        color = f"C{presets.index(r.preset) % 10}"
        styles.append({"color": color, "linestyle": ls, "marker": marker, "markersize": 3})
    return styles


def per_turn_comparison_figure(runs: list[RunCurves]) -> Figure:
    """Every run's per-turn curves: rows = quantities, columns = turn indices."""
    turns = sorted(set().union(*(r.turns() for r in runs)))[:MAX_TURNS]
    if not turns:
        fig, ((ax,),) = new_figure(6.0, 2.5)
        ax.text(0.5, 0.5, "no finished runs with per-turn metrics", ha="center", va="center")
        ax.set_axis_off()
        return fig
    width, height = 2.6 * len(turns) + 2.0, 1.9 * len(ROWS) + 0.7
    fig, axes = new_figure(
        width, height, rows=len(ROWS), cols=len(turns), sharex=True, sharey="row"
    )
    styles = run_styles(runs)
    for row, (quantity, label) in enumerate(ROWS):
        for col, k in enumerate(turns):
            ax = axes[row][col]
            for run, style in zip(runs, styles, strict=True):
                _plot_run(ax, run, style, quantity, k)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            if row == 0:
                ax.set_title(f"turn {k}", fontsize=10)
            if row == len(ROWS) - 1:
                ax.set_xlabel("iteration", fontsize=8)
        axes[row][0].set_ylabel(label, fontsize=8)
    handles = [Line2D([], [], label=r.label, **s) for r, s in zip(runs, styles, strict=True)]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, title="run")
    fig.suptitle(f"Per-turn statistics of {len(runs)} runs", fontsize=11)
    return fig


def _plot_run(ax, run: RunCurves, style: dict[str, Any], quantity: str, k: int) -> None:
    """One run's curve of `quantity` at turn k; for the clip scale, a min–max band too."""
    if quantity != CLIP:
        steps, values = _curve(run, turn_key(quantity, k))
        if steps:
            ax.plot(steps, values, label=run.label, **style)
        return
    scale = run.clip_eps_low or 1.0  # an unknown base leaves eps_low itself (c x eps)
    steps, mean = _curve(run, turn_key(f"{CLIP}/mean", k), scale)
    if not steps:
        return
    ax.plot(steps, mean, label=run.label, **style)
    low_steps, low = _curve(run, turn_key(f"{CLIP}/min", k), scale)
    high_steps, high = _curve(run, turn_key(f"{CLIP}/max", k), scale)
    if low_steps == high_steps == steps:
        ax.fill_between(steps, low, high, color=style["color"], alpha=0.12, linewidth=0)


def _curve(run: RunCurves, key: str, scale: float = 1.0) -> tuple[list[int], list[float]]:
    history = run.histories.get(key, {})
    steps = sorted(history)
    return steps, [history[s] / scale for s in steps]
