"""# The A²TGPO training flow

One Prefect flow run = one training run. Per iteration k:

1. sample prompts        -> iter=k/prompts
2. rollout (vLLM)        -> iter=k/trajectories    the multi-turn search agent, G per prompt
3. score-ig              -> iter=k/scored          v(h) after every turn boundary, IG per turn
4. advantages            -> iter=k/advantaged      A²TGPO (or GRPO / IGPO) per-turn advantages
5. train-step (ZeRO-3)   -> iter=k/checkpoint      the next policy, in DeepSpeed subprocesses
6. evaluate (every N)    -> iter=k/eval-greedy, iter=k/eval-sampled

before which `prepare` builds the initial model and prompt pools and `warmstart` fits
the synthetic demonstrations. Every stage commits its output with a manifest; a
rerun with the same `run_id` skips what is committed, so a crashed run resumes
from its last committed stage. MLflow gets one run per flow run (per-turn IG,
normalized IG, advantages, clip ranges, clip fractions, stage times); Prefect gets
a table artifact per iteration and a progress artifact.

    a2tgpo train                      # the embedded run (what `make run` does)
    a2tgpo train --preset grpo --set rollout.group_size=16
    prefect deploy --all              # deployments/prefect.yaml
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from a2tgpo.config import RunConfig
from a2tgpo.data.manifest import Manifest
from a2tgpo.pipeline import RunLayout, pin_run_config
from a2tgpo.presets import resolve_config
from a2tgpo.rollout.session import EngineSession
from a2tgpo.tracking.mlflow_logger import RunTracker, disable_mlflow_telemetry
from flows import tasks
from flows.reporting import Reporter


def evaluation_due(config: RunConfig, k: int) -> bool:
    every = config.eval.every
    return k == config.iterations - 1 or (every > 0 and (k + 1) % every == 0)


def _eval_em(results: dict[str, Manifest]) -> dict[str, float]:
    return {f"eval_{mode}_em": m.stats["em_mean"] for mode, m in results.items()}


@flow(name="a2tgpo-train", log_prints=True)
def train_flow(
    preset: str = "embedded",
    overrides: dict[str, Any] | None = None,
    config: RunConfig | None = None,
) -> dict[str, Any]:
    """Train a policy with A²TGPO (or a baseline preset); returns the final metrics and URIs."""
    disable_mlflow_telemetry()
    config = resolve_config(preset, overrides, config)
    log = get_run_logger()
    layout = RunLayout.of(config)
    pin_run_config(config, layout)  # before anything is tracked: a clash fails at once
    tracker = RunTracker(config, flow_run_id=flow_run.get_id())
    evals = sum(evaluation_due(config, k) for k in range(config.iterations))
    evals += config.eval.initial
    reporter = Reporter(config, tracker, total_steps=config.iterations + evals)
    status = "FAILED"
    try:
        uris = tasks.prepare(config)
        policy = layout.initial_policy(config)
        if config.warmstart.enabled:
            manifest, seconds = tasks.warmstart(config, uris["init"])
            tracker.log_metrics(
                {"warmstart/loss_last": manifest.stats["loss_last"], "time/warmstart_s": seconds},
                step=0,
            )
        reference = policy
        last: dict[str, float] = {}
        history: list[dict[str, Any]] = []  # one line per iteration, for the final summary
        with EngineSession(config) as session:
            if config.eval.initial:
                results, seconds_eval = tasks.evaluate(
                    config, policy, 0, uris["eval_prompts"], layout.uri("eval-initial"), session
                )
                reporter.evaluation(None, results, seconds_eval)
                history.append({"iteration": "start", **_eval_em(results)})
                reporter.step_done()
            for k in range(config.iterations):
                manifests, seconds = {}, {}
                tasks.prompts(config, k, uris["train_pool"])
                manifests["trajectories"], seconds["rollout"] = tasks.rollout(
                    config, k, policy, session
                )
                manifests["scored"], seconds["score_ig"] = tasks.score_ig(
                    config, k, policy, session
                )
                manifests["advantaged"], seconds["advantages"] = tasks.advantages(config, k)
                manifests["checkpoint"], seconds["train_step"] = tasks.train_step(
                    config, k, policy, reference
                )
                policy = layout.stage(k, "checkpoint")
                last = reporter.iteration(k, manifests, seconds)
                history.append({"iteration": k, **{m: last[m] for m in ("reward", "em", "f1")}})
                log.info(
                    "iteration %d: reward %.3f  EM %.3f  turns %.2f  clip %.4f",
                    k,
                    last["reward"],
                    last["em"],
                    last["turns_per_trajectory"],
                    last.get("clip_fraction", 0.0),
                )
                if evaluation_due(config, k):
                    results, seconds_eval = tasks.evaluate(
                        config,
                        policy,
                        k + 1,
                        uris["eval_prompts"],
                        layout.stage(k, "eval"),
                        session,
                    )
                    reporter.evaluation(k, results, seconds_eval)
                    history[-1].update(_eval_em(results))
                    reporter.step_done()
        reporter.figures()
        status = "FINISHED"
        return {
            "run_id": config.run_id,
            "policy": policy,
            "metrics": last,
            "history": history,
            "mlflow": tracker.url(),
            "storage": layout.uri(),
        }
    finally:
        tracker.finish(status)


if __name__ == "__main__":
    train_flow()
