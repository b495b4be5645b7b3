"""What a flow run shows: MLflow metrics and figures, Prefect artifacts, the run history.

Wiring only: the numbers come from `a2tgpo.tracking.metrics` (stage manifests). The
`Reporter` is the one place that keeps the run's history: a summary line per iteration
(reward, EM, F1 and the held-out EM where an evaluation ran) and the per-turn
statistics behind the figures.
"""

from __future__ import annotations

import time
from typing import Any

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from a2tgpo.analysis.benchmarks import average_metrics, benchmark_rows
from a2tgpo.config import RunConfig
from a2tgpo.data.manifest import Manifest
from a2tgpo.stages.contract import INITIAL
from a2tgpo.tracking.figures import clip_range_figure, per_turn_ig_figure
from a2tgpo.tracking.metrics import iteration_metrics, per_turn_table, rollout_metrics
from a2tgpo.tracking.mlflow_logger import RunTracker


def _key(config: RunConfig, *parts: object) -> str:
    """Artifact keys: lowercase letters, digits and dashes."""
    raw = "-".join(str(p) for p in (config.run_id, *parts)).lower()
    return "".join(c if c.isalnum() else "-" for c in raw)


def evaluation_due(config: RunConfig, k: int) -> bool:
    """Whether the policy trained in iteration k is evaluated: every `eval.every`, and last."""
    every = config.eval.every
    return k == config.iterations - 1 or (every > 0 and (k + 1) % every == 0)


def planned_steps(config: RunConfig) -> int:
    """Iterations plus evaluations: the progress artifact's 100%."""
    evals = sum(evaluation_due(config, k) for k in range(config.iterations))
    return config.iterations + evals + int(config.eval.initial)


class Reporter:
    def __init__(self, config: RunConfig, tracker: RunTracker, total_steps: int):
        self.config = config
        self.tracker = tracker
        self.total = max(total_steps, 1)
        self.done = 0
        self.summary: list[dict[str, Any]] = []  # one line per iteration (and "start")
        self.per_turn: list[dict[str, Any]] = []  # per-turn stats per iteration (figures)
        self.last: dict[str, float] = {}
        self.clock = time.perf_counter()  # the end of the last iteration (start_iterations)
        self.progress_id = create_progress_artifact(
            progress=0.0,
            key=_key(config, "progress"),
            description=f"A²TGPO run {config.run_id} ({config.preset}): iterations completed",
        )
        create_markdown_artifact(
            key=_key(config, "mlflow"),
            markdown=f"**MLflow run** for `{config.run_id}`: {tracker.url()}",
            description="Where this run's metrics live",
        )

    def warmstart(self, manifest: Manifest, seconds: float) -> None:
        metrics = {"warmstart/loss_last": manifest.stats["loss_last"], "time/warmstart_s": seconds}
        self.tracker.log_metrics(metrics, step=0)

    def start_iterations(self) -> None:
        self.clock = time.perf_counter()

    def iteration(self, k: int, manifests: dict[str, Manifest], seconds: dict[str, float]) -> dict:
        """Log iteration k from its stages' manifests and times (keyed by stage name).
        `time/iteration_s` is the wall time since the last iteration's report (an
        evaluation in between included; with overlap, less than the stages' sum)."""
        metrics = iteration_metrics(manifests, seconds)
        now = time.perf_counter()
        metrics["time/iteration_s"], self.clock = now - self.clock, now
        self.last = metrics
        self.tracker.log_metrics(metrics, step=k)
        self.tracker.set_tag(f"checkpoint.iter_{k:05d}", manifests["train-step"].uri)
        self.per_turn.append(
            {
                "iteration": k,
                "ig_by_turn": manifests["score-ig"].stats.get("ig_by_turn", {}),
                "by_turn": manifests["advantages"].stats.get("by_turn", {}),
            }
        )
        self.summary.append({"iteration": k, **{m: metrics[m] for m in ("reward", "em", "f1")}})
        headline = {
            key: round(metrics.get(key, float("nan")), 4)
            for key in ("reward", "em", "f1", "turns_per_trajectory", "clip_fraction")
        }
        times = {f"{s}_s": round(t, 1) for s, t in seconds.items()}
        create_table_artifact(
            key=_key(self.config, "iteration", f"{k:05d}"),
            table=per_turn_table(manifests),
            description=f"Iteration {k}: {headline} | stage times {times}",
        )
        self.step_done()
        return metrics

    def evaluation(self, k: int, manifests: dict[str, Manifest], seconds: float) -> None:
        """Log an evaluation: after iteration k, or of the starting policy (k = INITIAL:
        metrics `eval_initial/...` at step 0, the baseline the later ones compare with)."""
        initial = k == INITIAL
        prefix = "eval_initial" if initial else "eval"
        metrics = {f"time/{prefix}_s": seconds}
        for mode, manifest in manifests.items():
            metrics |= rollout_metrics(manifest.stats, prefix=f"{prefix}/{mode}/")
            metrics |= average_metrics(manifest.stats["by_source"], prefix=f"{prefix}/{mode}/")
        self.tracker.log_metrics(metrics, step=0 if initial else k)
        table = benchmark_rows({mode: m.stats["by_source"] for mode, m in manifests.items()})
        held_out = {f"eval_{mode}_em": m.stats["em_mean"] for mode, m in manifests.items()}
        if initial or not self.summary:
            self.summary.append({"iteration": "start" if initial else k, **held_out})
        else:
            self.summary[-1].update(held_out)
        what = "of the starting policy (before RL)" if initial else f"after iteration {k}"
        create_table_artifact(
            key=_key(self.config, "eval", "initial" if initial else f"{k:05d}"),
            table=table,
            description=f"Evaluation {what}: EM / F1 per data source (benchmarks in the "
            "papers' order, then the single-hop and multi-hop averages)",
        )
        self.step_done()

    def step_done(self) -> None:
        self.done += 1
        update_progress_artifact(self.progress_id, progress=100.0 * self.done / self.total)

    def figures(self) -> None:
        if not self.per_turn:
            return
        self.tracker.log_figure(per_turn_ig_figure(self.per_turn), "figures/per_turn_ig.png")
        self.tracker.log_figure(clip_range_figure(self.per_turn), "figures/clip_ranges.png")
