"""The per-turn figures a user reads at a glance: every turn side by side in its own
colour, a legend naming every turn, whole-number iteration ticks, titles inside the
figure, the clip scale's spread per turn; and the cross-run comparison read back from
a real MLflow store (sqlite in tmp_path).
"""

from __future__ import annotations

import matplotlib.image
import pytest
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from matplotlib.patches import Rectangle
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from a2tgpo.analysis.compare import collect
from a2tgpo.config import EstimatorConfig
from a2tgpo.data.fakes import fake_trajectories
from a2tgpo.scoring.trajectories import ig_stats
from a2tgpo.stages.advantages import advantage_stats, compute_advantages
from a2tgpo.tracking.figures import FIGURE_PATHS, run_figures
from a2tgpo.tracking.metrics import advantage_metrics, ig_metrics, turn_key
from a2tgpo.tracking.sweep_figures import ROWS, load_run_curves, per_turn_comparison_figure

TURNS, ITERATIONS, EPS = 3, 4, 0.2


def iteration_stats(estimator: str, seed: int) -> list[dict]:
    """Per iteration, the score-ig and advantages stats as the stages write them."""
    out = []
    for k in range(ITERATIONS):
        scored = fake_trajectories(16, tokens=160, turns=TURNS, schema_name="scored", seed=seed + k)
        table, details = compute_advantages(scored, EstimatorConfig(name=estimator), k)
        out.append({"score-ig": ig_stats(scored), "advantages": advantage_stats(table, details)})
    return out


@pytest.fixture(scope="module")
def history() -> list[dict]:
    """`Reporter.per_turn` of an A²TGPO run: 3 turns (the last without IG) x 4 iterations."""
    return [
        {
            "iteration": k,
            "ig_by_turn": s["score-ig"]["ig_by_turn"],
            "by_turn": s["advantages"]["by_turn"],
        }
        for k, s in enumerate(iteration_stats("a2tgpo", seed=0))
    ]


@pytest.fixture(scope="module")
def figures(history):
    figures = run_figures(history, base_eps=EPS)
    for fig in figures.values():
        fig.canvas.draw()
    return figures


def turn_lines(ax) -> list:
    return [line for line in ax.get_lines() if line.get_label().startswith("turn ")]


def inside(extent, bbox) -> bool:
    tol = 1.0  # pixels of rounding
    return (
        extent.x0 >= bbox.x0 - tol
        and extent.x1 <= bbox.x1 + tol
        and extent.y0 >= bbox.y0 - tol
        and extent.y1 <= bbox.y1 + tol
    )


def test_every_figure_renders_at_its_fixed_size(figures, tmp_path):
    assert tuple(figures) == FIGURE_PATHS
    for path, fig in figures.items():
        out = tmp_path / path
        out.parent.mkdir(exist_ok=True)
        fig.savefig(out)
        height, width = matplotlib.image.imread(out).shape[:2]
        want_w, want_h = fig.get_size_inches() * fig.dpi
        assert (width, height) == (round(want_w), round(want_h)), path


def test_one_line_per_turn_in_its_own_colour_and_a_legend_of_every_turn(figures, history):
    ig_turns = sorted(int(k) for k in history[0]["ig_by_turn"])
    assert ig_turns == [0, 1]  # the answer turn has no IG
    for path, fig in figures.items():
        want = [f"turn {k}" for k in (ig_turns if "ig.png" in path else range(TURNS))]
        (legend,) = fig.legends
        assert [t.get_text() for t in legend.get_texts()] == want, path
        for ax in fig.axes:
            lines = turn_lines(ax)
            if not lines:  # the clip figure's last-iteration panel draws bars
                continue
            assert [line.get_label() for line in lines] == want, path
            colours = {to_rgba(line.get_color()) for line in lines}
            assert len(colours) == len(lines), path
            assert all(len(line.get_xdata()) == ITERATIONS for line in lines), path


def test_iteration_ticks_are_whole_numbers(figures):
    for path, fig in figures.items():
        for ax in fig.axes:
            ticks = ax.get_xticks()
            assert len(ticks) and all(float(t).is_integer() for t in ticks), (path, ticks)


def test_titles_and_legends_fit_inside_the_figure(figures):
    for path, fig in figures.items():
        renderer = fig.canvas.get_renderer()
        texts = [ax.title for ax in fig.axes if ax.get_title()]
        if fig.get_suptitle():
            texts.append(fig._suptitle)
        assert texts, path
        for text in texts:
            assert inside(text.get_window_extent(renderer), fig.bbox), (path, text.get_text())
        for legend in fig.legends:
            assert inside(legend.get_window_extent(renderer), fig.bbox), path


def test_clip_figure_shows_each_turns_spread_of_c(figures, history):
    left, right = figures["figures/clip_ranges.png"].axes
    assert left.get_ylabel() == "clip scale c"
    last = history[-1]["by_turn"]
    # the mean line is c, not eps: the same values divided by the base eps
    mean_0 = turn_lines(left)[0].get_ydata()[-1]
    assert mean_0 == pytest.approx(last["0"]["eps_low_mean"] / EPS)
    # min-max bars per turn and iteration, of nonzero height where the turn has IG
    (bars_0, *_) = [c for c in left.collections if isinstance(c, LineCollection)]
    heights = [abs(seg[1][1] - seg[0][1]) for seg in bars_0.get_segments()]
    assert len(heights) == ITERATIONS and min(heights) > 0
    # the last iteration: one bar per turn, from c's min to its max, in the turn's colour
    boxes = [p for p in right.patches if isinstance(p, Rectangle)]
    assert len(boxes) == TURNS
    for k, box in enumerate(boxes):
        assert box.get_y() == pytest.approx(last[str(k)]["eps_low_min"] / EPS)
        assert box.get_y() + box.get_height() == pytest.approx(last[str(k)]["eps_low_max"] / EPS)
        colour = to_rgba(turn_lines(left)[k].get_color())
        assert to_rgba(box.get_facecolor())[:3] == colour[:3]
    # the terminal turn keeps c = 1; a searched turn spreads around 1
    assert boxes[-1].get_height() == pytest.approx(0.0)
    assert boxes[0].get_y() < 1.0 < boxes[0].get_y() + boxes[0].get_height()


def log_member(client, experiment: str, preset: str, seed: int) -> None:
    """A finished sweep member with the per-turn metrics its iterations logged."""
    tags = {"a2tgpo.sweep_id": "cmp", "a2tgpo.role": "member", "a2tgpo.preset": preset}
    tags["a2tgpo.run_id"] = f"cmp-{preset}-s{seed}"
    run_id = client.create_run(experiment, run_name=tags["a2tgpo.run_id"], tags=tags).info.run_id
    params = {"seed": seed, "estimator.clip_eps_low": EPS}
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
    for k, stats in enumerate(iteration_stats(preset, seed)):
        metrics = ig_metrics(stats["score-ig"]) | advantage_metrics(stats["advantages"])
        metrics |= {turn_key("clip_fraction", t): 0.01 * t for t in range(TURNS)}  # train step
        batch = [Metric(key, float(v), 0, k) for key, v in metrics.items()]
        client.log_batch(run_id, metrics=batch)
    client.set_terminated(run_id, "FINISHED")


def test_cross_run_figure_has_one_line_per_run_in_every_turn_panel(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    for preset in ("grpo", "a2tgpo"):
        log_member(client, experiment, preset, seed=0)
    runs = load_run_curves(client, collect(client, sweep_id="cmp"))
    assert sorted(r.label for r in runs) == ["a2tgpo s0", "grpo s0"]
    fig = per_turn_comparison_figure(runs)
    fig.savefig(tmp_path / "per_turn.png")
    axes = fig.axes
    assert len(axes) == len(ROWS) * TURNS
    assert [ax.get_title() for ax in axes[:TURNS]] == [f"turn {k}" for k in range(TURNS)]
    assert [ax.get_ylabel() for ax in axes[::TURNS]] == [label for _, label in ROWS]
    for i, ax in enumerate(axes):
        quantity, turn = ROWS[i // TURNS][0], i % TURNS
        lines = ax.get_lines()
        if quantity.startswith("ig/") and turn == TURNS - 1:
            assert not lines  # no IG on the answer turn
            continue
        assert sorted(line.get_label() for line in lines) == ["a2tgpo s0", "grpo s0"], quantity
        assert len({to_rgba(line.get_color()) for line in lines}) == 2
        assert all(list(line.get_xdata()) == list(range(ITERATIONS)) for line in lines)
    (legend,) = fig.legends
    assert sorted(t.get_text() for t in legend.get_texts()) == ["a2tgpo s0", "grpo s0"]
    renderer = fig.canvas.get_renderer()
    assert inside(fig._suptitle.get_window_extent(renderer), fig.bbox)
    assert inside(legend.get_window_extent(renderer), fig.bbox)


def test_cross_run_figure_without_runs_says_so():
    fig = per_turn_comparison_figure([])
    fig.canvas.draw()
    assert "no finished runs" in fig.axes[0].texts[0].get_text()
