"""What a flow run shows: MLflow metrics and figures, Prefect artifacts.

Wiring only: the numbers come from `a2tgpo.tracking.metrics` (stage manifests).
"""

from __future__ import annotations

from typing import Any

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from a2tgpo.config import RunConfig
from a2tgpo.data.manifest import Manifest
from a2tgpo.tracking.figures import clip_range_figure, per_turn_ig_figure
from a2tgpo.tracking.metrics import iteration_metrics, per_turn_table, rollout_metrics
from a2tgpo.tracking.mlflow_logger import RunTracker


def _key(config: RunConfig, *parts: object) -> str:
    """Artifact keys: lowercase letters, digits and dashes."""
    raw = "-".join(str(p) for p in (config.run_id, *parts)).lower()
    return "".join(c if c.isalnum() else "-" for c in raw)


class Reporter:
    def __init__(self, config: RunConfig, tracker: RunTracker, total_steps: int):
        self.config = config
        self.tracker = tracker
        self.total = max(total_steps, 1)
        self.done = 0
        self.history: list[dict[str, Any]] = []
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

    def iteration(self, k: int, manifests: dict[str, Manifest], seconds: dict[str, float]) -> dict:
        metrics = iteration_metrics(manifests, seconds)
        self.tracker.log_metrics(metrics, step=k)
        self.tracker.set_tag(f"checkpoint.iter_{k:05d}", manifests["checkpoint"].uri)
        self.history.append(
            {
                "iteration": k,
                "ig_by_turn": manifests["scored"].stats.get("ig_by_turn", {}),
                "by_turn": manifests["advantaged"].stats.get("by_turn", {}),
            }
        )
        rows = per_turn_table(manifests)
        headline = {
            key: round(metrics.get(key, float("nan")), 4)
            for key in ("reward", "em", "f1", "turns_per_trajectory", "clip_fraction")
        }
        times = {f"{s}_s": round(t, 1) for s, t in seconds.items()}
        create_table_artifact(
            key=_key(self.config, "iteration", f"{k:05d}"),
            table=rows,
            description=f"Iteration {k}: {headline} | stage times {times}",
        )
        self.step_done()
        return metrics

    def evaluation(self, k: int | None, manifests: dict[str, Manifest], seconds: float) -> None:
        """Log an evaluation: after iteration k, or of the starting policy (k None:
        metrics `eval_initial/...` at step 0, the baseline the later ones compare with)."""
        prefix = "eval" if k is not None else "eval_initial"
        metrics = {f"time/{prefix}_s": seconds}
        table = []
        for mode, manifest in manifests.items():
            metrics |= rollout_metrics(manifest.stats, prefix=f"{prefix}/{mode}/")
            for source, m in manifest.stats["by_source"].items():
                table.append({"mode": mode, "data_source": source, **m})
        self.tracker.log_metrics(metrics, step=k or 0)
        what = f"after iteration {k}" if k is not None else "of the starting policy (before RL)"
        create_table_artifact(
            key=_key(self.config, "eval", f"{k:05d}" if k is not None else "initial"),
            table=table,
            description=f"Evaluation {what}: EM / F1 per data source",
        )

    def step_done(self) -> None:
        self.done += 1
        update_progress_artifact(self.progress_id, progress=100.0 * self.done / self.total)

    def figures(self) -> None:
        if not self.history:
            return
        self.tracker.log_figure(per_turn_ig_figure(self.history), "figures/per_turn_ig.png")
        self.tracker.log_figure(clip_range_figure(self.history), "figures/clip_ranges.png")
