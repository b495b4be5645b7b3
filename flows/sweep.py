"""# The estimator sweep flow

One training run per (preset, seed), then the comparison table with honest statistics.

    a2tgpo sweep --presets hard-grpo,hard-igpo,hard-a2tgpo --seeds 3
    a2tgpo sweep --sweep-id cmp ... --work-pool gpu-pool   # members as deployment runs

1. every member's config is built and validated first: an unknown preset, a bad `--set`
   or an impossible seed list fails before anything runs;
2. (shared warm-start) one warm-start per seed, in a run of its own; the members of that
   seed start from its checkpoint (the warm-start does not depend on the estimator);
3. members run as subflows of this flow (one vLLM engine reused across them), or, with a
   work pool, as runs of the `a2tgpo-train` deployment so a cluster runs them in
   parallel pods. A member that fails is retried once (it resumes from its committed
   stages), then recorded with its error while the others go on;
4. the table (`a2tgpo.analysis.compare`) goes to a Prefect markdown artifact and, as
   markdown, CSV and a PNG of the learning curves, to the sweep's parent MLflow run,
   with the members' per-turn statistics side by side (`comparison/per_turn.png`).

A rerun of the same sweep id skips finished members and resumes half-finished ones.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from a2tgpo.analysis.compare import (
    MemberResult,
    collect,
    csv_table,
    curves_figure,
    markdown_table,
    summarize,
)
from a2tgpo.data.storage import Storage
from a2tgpo.layout import RunLayout
from a2tgpo.rollout.session import reuse_engines
from a2tgpo.sweep import (
    Member,
    SweepRecords,
    SweepSpec,
    from_warmstart,
    member_run_id,
    plan_members,
    warmstart_config,
)
from a2tgpo.tracking.mlflow_logger import SweepTracker, disable_mlflow_telemetry
from a2tgpo.tracking.sweep_figures import load_run_curves, per_turn_comparison_figure
from flows.tasks import run_stage
from flows.train import train_flow


@flow(name="a2tgpo-sweep", log_prints=True)
def sweep_flow(
    sweep_id: str,
    presets: list[str],
    seeds: list[int],
    overrides: list[str] | None = None,
    share_warmstart: bool = True,
    work_pool_deployment: str = "",
    baseline: str = "",
) -> dict[str, Any]:
    """Train every (preset, seed) member, then compare the presets; returns the table."""
    disable_mlflow_telemetry()
    spec = SweepSpec(sweep_id, list(presets), list(seeds), list(overrides or []), share_warmstart)
    members = plan_members(spec)  # every config validated before anything runs
    # Only a sweep whose members warm-start shares one (an instruct model has none).
    share_warmstart = share_warmstart and all(m.config.warmstart.enabled for m in members)
    if share_warmstart:
        [warmstart_config(spec, seed) for seed in spec.seeds]  # the presets can share one
    first = members[0].config
    records = SweepRecords(Storage(first.storage), sweep_id)
    recorded = records.pin(spec)
    tracker = SweepTracker(first, sweep_id, spec.to_json(), recorded["parent_run_id"])
    recorded["parent_run_id"] = tracker.run_id
    records.write_json(recorded, "sweep.json")
    members = plan_members(spec, parent_run_id=tracker.run_id)
    try:
        with reuse_engines():
            starts = shared_warmstarts(spec) if share_warmstart else {}
            gave_up = set()
            if work_pool_deployment:
                gave_up = run_members_on_pool(members, starts, records, work_pool_deployment)
            for member in members:  # here, or what the pool could not finish: skipped if done
                if member.run_id not in gave_up:
                    run_member(member, starts.get(member.seed), records)
        return report(spec, tracker, records, baseline)
    finally:
        tracker.finish("FINISHED")


def shared_warmstarts(spec: SweepSpec) -> dict[int, str]:
    """One warm-start per seed (committed once, like any stage); its checkpoint URI."""
    starts = {}
    for seed in spec.seeds:
        config = warmstart_config(spec, seed)
        run_stage("prepare", config)
        manifest, _ = run_stage("warmstart", config)
        starts[seed] = manifest.uri or RunLayout.of(config).warmstart
    return starts


def run_member(member: Member, warmstart_uri: str | None, records: SweepRecords) -> None:
    """Train one member as a subflow (retried once; a failure is recorded, not raised)."""
    log = get_run_logger()
    if records.finished(member.run_id):
        log.info("member %s finished in an earlier run of the sweep; skipped", member.run_id)
        return
    config = from_warmstart(member.config, warmstart_uri) if warmstart_uri else member.config
    records.record_member(member.run_id, status="running", preset=member.preset, seed=member.seed)
    error = ""
    for attempt in (1, 2):
        try:
            result = train_flow.with_options(flow_run_name=config.run_id)(
                preset=member.preset, config=config
            )
            records.record_member(
                member.run_id, status="finished", preset=member.preset, seed=member.seed,
                mlflow_run_id=result.get("mlflow_run_id", ""), attempts=attempt,
            )  # fmt: skip
            return
        except Exception as failure:  # a member's failure must not stop the others
            error = f"{type(failure).__name__}: {(str(failure).strip().splitlines() or [''])[0]}"
            log.warning("member %s attempt %d failed: %s", member.run_id, attempt, error)
    records.record_member(
        member.run_id, status="failed", preset=member.preset, seed=member.seed, error=error
    )


def run_members_on_pool(
    members: list[Member], starts: dict[int, str], records: SweepRecords, deployment: str
) -> set[str]:
    """Submit every unfinished member to the deployment at once (a cluster runs them in
    parallel pods), resubmit a failed one once, and record each outcome. Returns the run
    ids that failed twice (a rerun of the sweep tries them again)."""
    import time

    from prefect.deployments import run_deployment

    def submit(member: Member):
        config = member.config
        if starts.get(member.seed):
            config = from_warmstart(config, starts[member.seed])
        # the member's whole config; empty overrides, or the deployment's defaults
        # (its run_id among them) would be applied on top of it
        parameters = {
            "preset": member.preset,
            "config": config.model_dump(mode="json"),
            "overrides": {},
        }
        return run_deployment(deployment, parameters=parameters, timeout=0, as_subflow=True)

    todo = [m for m in members if not records.finished(m.run_id)]
    pending = {m.run_id: (m, submit(m), 1) for m in todo}
    gave_up: set[str] = set()
    while pending:
        time.sleep(POOL_POLL_S)
        for run_id, (member, flow_run, attempt) in list(pending.items()):
            state = _state_of(flow_run.id)
            if not state.is_final():
                continue
            del pending[run_id]
            common = {"preset": member.preset, "seed": member.seed, "attempts": attempt}
            if state.is_completed():
                records.record_member(
                    run_id, status="finished", flow_run=str(flow_run.id), **common
                )
            elif attempt == 1:
                pending[run_id] = (member, submit(member), 2)
            else:
                error = f"deployment run {flow_run.name} ended {state.type.value}"
                records.record_member(run_id, status="failed", error=error, **common)
                gave_up.add(run_id)
    return gave_up


POOL_POLL_S = 10.0


def _state_of(flow_run_id):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).state


def report(spec: SweepSpec, tracker: SweepTracker, records: SweepRecords, baseline: str) -> dict:
    """The comparison table as a Prefect artifact, MLflow artifacts and sweep files."""
    members = collect(tracker.client, sweep_id=spec.sweep_id)
    members += _never_tracked(spec, records, {m.run_id for m in members})
    rows = summarize(members, baseline, order=spec.presets)
    table = markdown_table(rows, baseline)
    header = f"# Sweep `{spec.sweep_id}`\n\npresets {spec.presets}, seeds {spec.seeds}, "
    header += f"--set {spec.overrides}\n\nMean ± 95% Student-t half-width over seeds (n given); "
    header += "Δ: paired over common seeds, * = interval excludes 0.\n\n"
    create_markdown_artifact(
        key=f"sweep-{spec.sweep_id}".lower().replace("_", "-").replace(".", "-"),
        markdown=header + table,
        description=f"Estimator comparison of sweep {spec.sweep_id}",
    )
    tracker.log_text(header + table, "comparison/table.md")
    tracker.log_text(csv_table(rows), "comparison/table.csv")
    tracker.log_figure(curves_figure(members), "comparison/curves.png")
    per_turn = per_turn_comparison_figure(load_run_curves(tracker.client, members))
    tracker.log_figure(per_turn, "comparison/per_turn.png")
    records.storage.write_bytes(records.uri("table.md"), (header + table).encode())
    return {"table": table, "members": len(members), "mlflow_run_id": tracker.run_id}


def _never_tracked(spec: SweepSpec, records: SweepRecords, tracked: set[str]) -> list:
    """Members that failed before their MLflow run existed, so the table still lists them."""
    out = []
    for preset in spec.presets:
        for seed in spec.seeds:
            run_id = member_run_id(spec.sweep_id, preset, seed)
            record = records.member(run_id) or {}
            if run_id not in tracked and record.get("status") == "failed":
                out.append(
                    MemberResult(run_id, "", preset, seed, "FAILED", record.get("error", ""))
                )
    return out


if __name__ == "__main__":
    sweep_flow("sweep", ["grpo", "a2tgpo"], [0])
