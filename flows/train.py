"""# The A²TGPO training flow

One Prefect flow run = one training run. Per iteration k:

1. prompts               -> iter=k/prompts         sampled from the training pool
2. rollout (vLLM)        -> iter=k/trajectories    the multi-turn search agent, G per prompt
3. score-ig              -> iter=k/scored          v(h) after every turn boundary, IG per turn
4. advantages            -> iter=k/advantaged      A²TGPO (or GRPO / IGPO) per-turn advantages
5. train-step (ZeRO-3)   -> iter=k/checkpoint      the next policy, in DeepSpeed subprocesses
6. evaluate (every N)    -> iter=k/eval-greedy, iter=k/eval-sampled

The train step's ranks start once per flow run and keep the model and optimizer state
in memory (`pipeline.trainer=persistent`, `a2tgpo.training.persistent`); every step
still commits its checkpoint. With `pipeline.overlap`, stages 1-4 of iteration k run
(rolling out with policy k - 1) while train step k - 1 runs.

before which `prepare` builds the initial model and prompt pools and `warmstart` fits
the synthetic demonstrations. Each stage is declared once in `a2tgpo.stages.contract`
(its URIs for iteration k, its seed) and runs as a Prefect task of the same name. Every
stage commits its output with a manifest; a rerun with the same `run_id` skips what is
committed, so a crashed run resumes from its last committed stage; its MLflow run and
Prefect flow run, left RUNNING by a killed process, are marked KILLED / Crashed when the
rerun starts (`take_over_dead_runs`). MLflow gets one run per flow run (per-turn IG,
normalized IG, advantages, clip ranges, clip fractions, stage times); Prefect gets a
table artifact per iteration and a progress artifact.

The flow run is named `<preset>-<run_id>` and tagged `preset:<name>`,
`estimator:<name>` and `a2tgpo-run:<run_id>`; its parameters are the preset (a choice
list in Prefect's run form), a partial `config` tree and `overrides`, both applied on
top of the preset (`a2tgpo.presets.resolve_config`).

    a2tgpo train                      # the embedded run (what `make run` does)
    a2tgpo train --preset grpo --set rollout.group_size=16
    prefect deploy --prefect-file deployments/prefect.yaml --all
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from a2tgpo.config import RunConfig
from a2tgpo.engines.options import logprob_mismatch_warning
from a2tgpo.layout import RunLayout, pin_run_config
from a2tgpo.presets import resolve_config
from a2tgpo.rollout.session import EngineSession
from a2tgpo.stages.contract import INITIAL, ITERATION_STAGES
from a2tgpo.supervise import identity_alive, process_identity
from a2tgpo.tracking.mlflow_logger import RunTracker, disable_mlflow_telemetry, mark_crashed_runs
from a2tgpo.training.persistent import trainer_for
from flows.parameters import PartialConfig, PresetName
from flows.reporting import Reporter, evaluation_due, flow_run_links, planned_steps
from flows.tasks import run_stage, submit_stage


def flow_run_name() -> str:
    """`<preset>-<run_id>` of the config the parameters resolve to. Parameters that do
    not resolve fail the run in its body, with their own error; the name is then the
    preset parameter's alone."""
    parameters = flow_run.parameters
    try:
        config = resolve_config(
            parameters.get("preset", "embedded"),
            parameters.get("overrides"),
            parameters.get("config"),
        )
    except Exception:
        return f"{parameters.get('preset', 'embedded')}-unresolved"
    return f"{config.preset}-{config.run_id}"


@flow(name="a2tgpo-train", flow_run_name=flow_run_name, log_prints=True)
def train_flow(
    preset: PresetName = "embedded",
    overrides: dict[str, Any] | list[str] | None = None,
    config: PartialConfig = None,
) -> dict[str, Any]:
    """Train a policy with A²TGPO (or a baseline preset); returns the final metrics and URIs.

    Args:
        preset: The named experiment to start from (a2tgpo.presets).
        overrides: Applied last: dotted keys to values ({"rollout.group_size": 16}) or
            "key=value" strings.
        config: Config values merged on top of the preset, section by section, as in a
            `--config` file ({"rollout": {"group_size": 16}}); a whole RunConfig from
            Python is taken as it is.
    """
    disable_mlflow_telemetry()
    config = resolve_config(preset, overrides, config)
    layout = RunLayout.of(config)
    pin_run_config(config, layout)  # before anything is tracked: a clash fails at once
    if warning := logprob_mismatch_warning(config):
        get_run_logger().warning(warning)
    take_over_dead_runs(config)
    links = flow_run_links(flow_run.get_id())
    tracker = RunTracker(
        config,
        flow_run_id=flow_run.get_id(),
        flow_run_url="" if links["command"] else links["url"],  # a temporary server's: gone
        storage_uri=layout.uri(),
    )
    reporter = Reporter(config, tracker, total_steps=planned_steps(config))
    error: BaseException | None = None
    try:
        run_stage("prepare", config)
        reporter.datasets(layout)
        if config.warmstart.enabled:
            reporter.warmstart(*run_stage("warmstart", config))
        with EngineSession(config) as session:
            session.trainer = trainer_for(config)  # closed with the session
            if config.eval.initial:
                reporter.evaluation(INITIAL, *run_stage("evaluate", config, INITIAL, session))
            reporter.start_iterations()
            if config.pipeline.overlap:
                run_overlapped(config, session, reporter)
            else:
                for k in range(config.iterations):
                    stages = run_stages(config, k, session, ITERATION_STAGES)
                    finish_iteration(config, k, session, reporter, *stages)
        reporter.figures()
        policy = layout.policy(config, config.iterations)
        reporter.final_policy(layout, policy)
        return {
            "run_id": config.run_id,
            "preset": config.preset,
            "mlflow_run_id": tracker.run_id,
            "policy": policy,
            "metrics": reporter.last,
            "history": reporter.summary,
            "mlflow": tracker.url(),
            "mlflow_ui": tracker.ui_command(),
            "prefect_flow_run_id": str(flow_run.get_id() or ""),
            "prefect": links["url"],
            "prefect_ui": links["command"],
            "storage": layout.uri(),
        }
    except BaseException as failure:
        error = failure
        raise
    finally:
        reporter.close()
        tracker.finish("FAILED" if error else "FINISHED", error)


RUN_TAG = "a2tgpo-run:"  # + run_id: the Prefect tag of every flow run of a run
PROCESS_TAG = "a2tgpo-process:"  # + the process running the flow (supervise.process_identity)


def take_over_dead_runs(config: RunConfig) -> None:
    """Tag this flow run with its run id and process, then mark the runs of the same run
    id that are RUNNING but whose process is gone: MLflow runs KILLED (tag
    `a2tgpo.crashed=true`), Prefect flow runs Crashed."""
    logger = get_run_logger()
    killed = mark_crashed_runs(config)
    if killed:
        logger.warning("marked %d dead MLflow run(s) of run %r KILLED", len(killed), config.run_id)
    try:
        crashed = mark_crashed_flow_runs(config.run_id, identity_tags(config))
    except Exception as error:  # bookkeeping: never the reason a run does not start
        logger.warning("could not check for dead Prefect flow runs: %s", error)
        return
    if crashed:
        logger.warning("marked %d dead flow run(s) of run %r Crashed", crashed, config.run_id)


def identity_tags(config: RunConfig) -> list[str]:
    """What the run is, as flow-run tags (filters in Prefect's UI)."""
    return [f"preset:{config.preset}", f"estimator:{config.estimator.name}"]


def mark_crashed_flow_runs(run_id: str, tags: Sequence[str] = ()) -> int:
    """Tag the current flow run (its run id, process and `tags`); set the other RUNNING
    flow runs tagged with `run_id` whose process is gone to Crashed. Returns how many were."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas import filters
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    own = flow_run.get_id()
    if own is None:  # not inside a flow run
        return 0
    running = filters.FlowRunFilter(
        tags=filters.FlowRunFilterTags(all_=[RUN_TAG + run_id]),
        state=filters.FlowRunFilterState(
            type=filters.FlowRunFilterStateType(any_=[StateType.RUNNING])
        ),
    )
    crashed = 0
    with get_client(sync_client=True) as client:
        own_tags = [*client.read_flow_run(own).tags, RUN_TAG + run_id, *tags]
        own_tags.append(PROCESS_TAG + process_identity())
        client.update_flow_run(own, tags=list(dict.fromkeys(own_tags)))
        for other in client.read_flow_runs(flow_run_filter=running):
            process = next((t for t in other.tags if t.startswith(PROCESS_TAG)), PROCESS_TAG)
            if str(other.id) == str(own) or identity_alive(process.removeprefix(PROCESS_TAG)):
                continue
            message = f"its process is gone; marked by a rerun of run {run_id!r}"
            client.set_flow_run_state(other.id, Crashed(message=message), force=True)
            crashed += 1
    return crashed


def run_stages(config: RunConfig, k: int, session: EngineSession, names) -> tuple[dict, dict]:
    """Stages `names` of iteration k, in order: (manifests, seconds) by stage name."""
    manifests, seconds = {}, {}
    for name in names:
        manifests[name], seconds[name] = run_stage(name, config, k, session)
    return manifests, seconds


def run_overlapped(config: RunConfig, session: EngineSession, reporter: Reporter) -> None:
    """`pipeline.overlap`: iteration k's prompts, rollout (with policy k - 1, as planned by
    `rollout_policy_version`), IG scoring and advantages run while train step k - 1 runs
    in the task runner's thread (its DeepSpeed workers in their own processes)."""
    before_train = [name for name in ITERATION_STAGES if name != "train-step"]
    pending = None  # (iteration, manifests, seconds, future of its train step)
    try:
        for k in range(config.iterations):
            manifests, seconds = run_stages(config, k, session, before_train)
            if pending is not None:
                finish_overlapped(config, session, reporter, *pending)
            pending = (k, manifests, seconds, submit_stage("train-step", config, k, session))
        finish_overlapped(config, session, reporter, *pending)
        pending = None
    except Exception:
        if pending is not None:  # let the running step commit: a rerun resumes after it
            pending[3].wait()
        raise


def finish_overlapped(config, session, reporter, k, manifests, seconds, future) -> None:
    manifests["train-step"], seconds["train-step"] = future.result()
    finish_iteration(config, k, session, reporter, manifests, seconds)


def finish_iteration(
    config: RunConfig,
    k: int,
    session: EngineSession,
    reporter: Reporter,
    manifests: dict,
    seconds: dict,
) -> None:
    """Report iteration k (all its stages done), then evaluate its policy when due."""
    metrics = reporter.iteration(k, manifests, seconds)
    get_run_logger().info(
        "iteration %d: reward %.3f  EM %.3f  turns %.2f  clip %.4f",
        k,
        metrics["reward"],
        metrics["em"],
        metrics["turns_per_trajectory"],
        metrics.get("clip_fraction", 0.0),
    )
    if evaluation_due(config, k):
        reporter.evaluation(k, *run_stage("evaluate", config, k, session))


if __name__ == "__main__":
    train_flow()
