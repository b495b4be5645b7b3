"""What a flow run shows: MLflow metrics, figures, datasets and model, Prefect
artifacts, the run history, and the links between the two tools.

Wiring only: the numbers come from `a2tgpo.tracking.metrics` (stage manifests). The
`Reporter` is the one place that keeps the run's history: a summary line per iteration
(reward, EM, F1 and the held-out EM where an evaluation ran) and the per-turn
statistics behind the figures.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from tqdm.auto import tqdm

from a2tgpo.analysis.benchmarks import average_metrics, benchmark_rows
from a2tgpo.config import RunConfig
from a2tgpo.data.checkpoints import policy_files
from a2tgpo.data.manifest import Manifest
from a2tgpo.data.stage import read_manifest, read_stage
from a2tgpo.engines.adapters import save_merged
from a2tgpo.layout import RunLayout
from a2tgpo.stages.contract import INITIAL
from a2tgpo.tracking.figures import run_figures
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


def flow_run_links(flow_run_id: str | None) -> dict[str, str]:
    """Where to open a flow run in Prefect's UI. On a server (PREFECT_UI_URL, or
    PREFECT_API_URL without `/api`): its `url`. A run without one used a temporary
    server that is gone with its process; its database is in PREFECT_HOME, so `command`
    serves that home's UI, where `url` is the run's page."""
    from prefect.settings import get_current_settings
    from prefect.utilities.urls import url_for

    if not flow_run_id:
        return {"url": "", "command": ""}
    if url := url_for("flow-run", obj_id=flow_run_id):
        return {"url": _public(url), "command": ""}
    settings = get_current_settings()
    ui = f"http://{settings.server.api.host}:{settings.server.api.port}"
    return {
        "url": f"{ui}/runs/flow-run/{flow_run_id}",
        "command": f"PREFECT_HOME={settings.home} prefect server start",
    }


def _public(url: str) -> str:
    """A URL without userinfo, query or fragment: it goes into tags, logs and artifacts."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


# The stage words of an iteration's one-line description
_STAGE_WORDS = {"train-step": "train"}
NO_IG_NOTE = "no IG: every turn here ends its trajectory, and IG needs the turn after it"


def iteration_description(k: int, metrics: dict[str, float], seconds: dict[str, float]) -> str:
    """`Iteration 3: reward 0.45, EM 0.45, 2.6 turns, clip 2.6%; 21 s (rollout 6 s, ...)`:
    the headline numbers and where the time went (stages under half a second left out)."""
    parts = [
        f"reward {metrics['reward']:.2f}",
        f"EM {metrics['em']:.2f}",
        f"{metrics['turns_per_trajectory']:.1f} turns",
    ]
    if "clip_fraction" in metrics:
        parts.append(f"clip {100 * metrics['clip_fraction']:.1f}%")
    total = metrics.get("time/iteration_s", sum(seconds.values()))
    stages = [f"{_STAGE_WORDS.get(s, s)} {t:.0f} s" for s, t in seconds.items() if t >= 0.5]
    return f"Iteration {k}: {', '.join(parts)}; {total:.0f} s ({', '.join(stages)})"


def explain_blank_ig(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-turn rows with a `note` column saying why a row's IG cells are blank: a
    turn's IG compares the value after the next turn with its own, so the turn index
    where every trajectory ended (its answer, or the turn limit) has none."""
    for row in rows:
        ig = row.get("ig_mean")
        blank = ig is None or (isinstance(ig, float) and math.isnan(ig))
        row["note"] = NO_IG_NOTE if blank else ""
    return rows


def uploaded_policy(layout: RunLayout, uri: str, scratch: Path) -> Path:
    """The HF folder MLflow uploads: the policy's, or for a LoRA policy its adapter merged
    into the base, written under `scratch` (a folder any transformers loads)."""
    policy = policy_files(layout.storage, uri)
    if policy.adapter_dir is None:
        return policy.model_dir
    return save_merged(policy.model_dir, policy.adapter_dir, scratch / "merged")


def log_model_mode(config: RunConfig) -> str:
    """`tracking.log_model`, with auto resolved: the tiny model (built by the run, a few
    MB) is uploaded, any other model (GBs) referenced by its URI."""
    mode = config.tracking.log_model
    if mode == "auto":
        return "reference" if config.model.policy else "upload"
    return mode


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
        # the run's overall progress on the console, above the stages' own bars
        self.bar = tqdm(total=self.total, desc=f"run {config.run_id}", unit="step", position=0)
        self.progress_id = create_progress_artifact(
            progress=0.0,
            key=_key(config, "progress"),
            description=f"A²TGPO run {config.run_id} ({config.preset}): iterations completed",
        )
        serve = f" (serve it with `{tracker.ui_command()}`)" if tracker.ui_command() else ""
        create_markdown_artifact(
            key=_key(config, "mlflow"),
            markdown=f"**MLflow run** of `{config.run_id}`: {tracker.url()}{serve}",
            description="Where this run's metrics, figures, datasets and model live",
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
        create_table_artifact(
            key=_key(self.config, "iteration", f"{k:05d}"),
            table=explain_blank_ig(per_turn_table(manifests)),
            description=iteration_description(k, metrics, seconds),
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

    def datasets(self, layout: RunLayout) -> None:
        """The training prompt pool and the held-out sample as the MLflow run's dataset
        inputs (schema, rows, digest; the source is their storage URI)."""
        for uri, name, context in (
            (layout.pool("train"), "prompts-train", "training"),
            (layout.uri("eval-prompts"), "eval-prompts", "evaluation"),
        ):
            if read_manifest(layout.storage, uri) is not None:
                table = read_stage(layout.storage, uri, "prompts")
                self.tracker.log_dataset(table, uri, name, context)

    def final_policy(self, layout: RunLayout, uri: str) -> None:
        """The final policy as the MLflow run's logged model (`tracking.log_model`); a
        failure is a warning and the tag `a2tgpo.log_model_error`: the checkpoint itself
        is committed in storage whatever MLflow does."""
        from prefect import get_run_logger

        mode = log_model_mode(self.config)
        if mode == "off":
            return
        start = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory(prefix="a2tgpo-merged-") as tmp:
                local = uploaded_policy(layout, uri, Path(tmp)) if mode == "upload" else None
                self.tracker.log_policy(self.config, uri, local, step=self.config.iterations)
        except Exception as error:
            get_run_logger().warning("could not log the final policy to MLflow: %s", error)
            self.tracker.set_tag("a2tgpo.log_model_error", f"{type(error).__name__}: {error}"[:500])
            return
        seconds = time.perf_counter() - start
        self.tracker.log_metrics({"time/log_model_s": seconds}, step=self.config.iterations - 1)

    def step_done(self) -> None:
        """One iteration or evaluation done (the progress artifact and the console bar)."""
        self.done += 1
        self.bar.update(1)
        if self.last:
            self.bar.set_postfix(reward=f"{self.last.get('reward', float('nan')):.3f}")
        update_progress_artifact(self.progress_id, progress=100.0 * self.done / self.total)

    def close(self) -> None:
        self.bar.close()

    def figures(self) -> None:
        if not self.per_turn:
            return
        base_eps = self.config.estimator.clip_eps_low
        for path, figure in run_figures(self.per_turn, base_eps=base_eps).items():
            self.tracker.log_figure(figure, path)
