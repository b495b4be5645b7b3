"""# The evaluation flow

EM and F1 per data source on the run's held-out prompts, greedy and sampled, for one
policy: by default the run's newest committed checkpoint. Writes two trajectories
datasets under `{run}/evaluations/v<version>/`, logs the numbers to an MLflow run of
its own (tagged with the flow-run id) and a Prefect table artifact.

    a2tgpo evaluate                                     # newest checkpoint of the default run
    a2tgpo evaluate --set env.kind=search_qa --set env.eval_dataset=.../test.parquet \\
        --set eval.prompts_per_source=100 --set env.retriever=http \\
        --set env.retriever_url=http://127.0.0.1:8000/retrieve   # the seven-benchmark table
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from a2tgpo.data.commit import is_committed
from a2tgpo.errors import InputError
from a2tgpo.layout import RunLayout
from a2tgpo.presets import resolve_config
from a2tgpo.rollout.session import EngineSession
from a2tgpo.stages.contract import STAGES
from a2tgpo.tracking.mlflow_logger import RunTracker, disable_mlflow_telemetry
from flows.parameters import PartialConfig, PresetName
from flows.reporting import Reporter
from flows.tasks import run_stage


@flow(name="a2tgpo-evaluate", log_prints=True)
def evaluate_flow(
    preset: PresetName = "embedded",
    overrides: dict[str, Any] | list[str] | None = None,
    policy_uri: str = "",
    config: PartialConfig = None,
) -> dict[str, Any]:
    """Evaluate a policy (default: the run's newest checkpoint); returns EM / F1 per data
    source by mode (`results`), the policy's URI and its version."""
    disable_mlflow_telemetry()
    config = resolve_config(preset, overrides, config)
    layout = RunLayout.of(config)
    run_stage("prepare", config)
    version = 0
    if not policy_uri:
        policy_uri, version = layout.latest_policy(config)
        if (
            version == 0
            and config.warmstart.enabled
            and not is_committed(layout.storage, policy_uri)
        ):
            raise InputError(
                f"run {config.run_id!r} has no checkpoint yet (not even its warm-start): "
                "train it first, pass --policy, or set warmstart.enabled=false to evaluate "
                "the initial model"
            )
    plan = STAGES["evaluate"].plan(config, version - 1)
    plan = plan.override(
        policy=policy_uri, out=layout.uri("evaluations", f"v{version:05d}", "eval")
    )
    tracker = RunTracker(
        config, flow_run_id=flow_run.get_id(), run_name=f"eval-{config.run_id}-v{version}"
    )
    reporter = Reporter(config, tracker, total_steps=1)
    status = "FAILED"
    try:
        with EngineSession(config) as session:
            results, seconds = run_stage("evaluate", config, session=session, plan=plan)
        reporter.evaluation(version, results, seconds)
        tracker.set_tag("a2tgpo.policy_uri", policy_uri)
        status = "FINISHED"
        by_source = {mode: m.stats["by_source"] for mode, m in results.items()}
        return {"results": by_source, "policy": policy_uri, "version": version}
    finally:
        tracker.finish(status)


if __name__ == "__main__":
    evaluate_flow()
