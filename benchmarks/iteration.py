"""Where an iteration of the embedded run goes, for three ways of running the trainer.

    .venv/bin/python benchmarks/iteration.py [--iterations 8] [--json out.json]

One process trains the embedded preset three times from one shared warm-start and one
vLLM engine (started before any timing, `reuse_engines`): with a new DeepSpeed
subprocess per train step (`pipeline.trainer=subprocess`), with the persistent trainer
(the default), and with the persistent trainer plus `pipeline.overlap` (and TIS). Each
run's iteration loop is split into its stages' wall times (from MLflow), the train step
into start-up and compute, and, by wrapping functions in this process only
(`benchmarks/timers.py`), storage I/O (dataset and checkpoint reads and commits: inside
the stages' times), MLflow calls and Prefect calls (artifacts, and a task's own overhead
around its stage function). The persistent trainer's resident memory (its ranks and
their children) is sampled after every step.

Last line: `persistent_vs_subprocess=X overlap_vs_sync=Y overhead_share=Z`: ratios of
the mean wall time per iteration (loop wall / iterations, evaluations included), and
the share of the persistent run's loop spent in storage, MLflow and Prefect calls.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from timers import Buckets, tree_rss_mib

MODES = {
    "subprocess": ["pipeline.trainer=subprocess"],
    "persistent": ["pipeline.trainer=persistent"],
    "overlap": ["pipeline.trainer=persistent", "pipeline.overlap=true", "train.rollout_correction=tis"],
}  # fmt: skip
STAGE_KEYS = {
    "prompts": "time/prompts_s",
    "rollout": "time/rollout_s",
    "score-ig": "time/score_ig_s",
    "advantages": "time/advantages_s",
    "train step": "time/train_step_s",
    "  start-up": "time/train_startup_s",
    "  compute": "time/train_compute_s",
    "evaluation": "time/eval_s",
}


def instrument(buckets: Buckets, marks: dict, rss: dict) -> None:
    """Wrap the storage, MLflow and Prefect calls; mark the loop; sample memory."""
    import flows.reporting as reporting
    import flows.tasks as tasks
    import flows.train as train
    from a2tgpo.data import directories, stage
    from a2tgpo.tracking.mlflow_logger import RunTracker
    from a2tgpo.training.persistent import PersistentTrainer

    for name in ("read_stage", "write_stage", "read_manifest"):
        buckets.patch_function("storage", stage, name)
    for name in ("commit_directory", "materialize"):
        buckets.patch_function("storage", directories, name)
    for name in ("log_params", "log_metrics", "set_tag", "log_figure", "log_dict"):
        buckets.patch_method("mlflow", RunTracker, name)
    for name in ("create_table_artifact", "create_markdown_artifact", "update_progress_artifact"):
        buckets.patch_function("prefect", reporting, name)

    run_stage = tasks.run_stage

    def timed_stage(*args, **kwargs):
        start = time.perf_counter()
        result, seconds = run_stage(*args, **kwargs)
        buckets.seconds["prefect"] += time.perf_counter() - start - seconds
        return result, seconds

    tasks.run_stage = train.run_stage = timed_stage

    mark(reporting.Reporter, "start_iterations", "start", marks)
    mark(reporting.Reporter, "figures", "end", marks)  # figures: right after the loop
    trainer_run = PersistentTrainer.run

    def sampled_run(self, job):
        stats = trainer_run(self, job)
        rss.setdefault("trainer", []).append(round(tree_rss_mib(self.worker_pids()), 1))
        return stats

    PersistentTrainer.run = sampled_run


def mark(cls, name: str, key: str, marks: dict) -> None:
    """Record the time `cls.name` is called at as `marks[key]`."""
    original = getattr(cls, name)

    def marked(self, *args, **kwargs):
        marks[key] = time.perf_counter()
        return original(self, *args, **kwargs)

    setattr(cls, name, marked)


def base_config(root: Path, iterations: int, run_id: str, extra: list[str]):
    from a2tgpo.presets import resolve_config

    return resolve_config(
        "embedded",
        [
            f"storage.root={root / 'store'}",
            f"tracking.mlflow_uri=sqlite:///{root / 'mlflow.db'}",
            f"iterations={iterations}",
            f"run_id={run_id}",
            *extra,
        ],
    )


def warm_up(root: Path, iterations: int):
    """Prepare and warm-start once; start the vLLM engine and park it. The warm-start's URI."""
    from a2tgpo.data.checkpoints import local_policy
    from a2tgpo.layout import RunLayout
    from a2tgpo.rollout.session import EngineSession
    from a2tgpo.stages.contract import STAGES

    config = base_config(root, iterations, "bench-warm", [])
    for name in ("prepare", "warmstart"):
        start = time.perf_counter()
        STAGES[name].run(config, STAGES[name].plan(config))
        print(f"{name}: {time.perf_counter() - start:.1f} s", flush=True)
    layout = RunLayout.of(config)
    session = EngineSession(config)
    start = time.perf_counter()
    session.engine_for(str(local_policy(layout.storage, layout.warmstart)))
    session.close()  # parked for the runs below (reuse_engines)
    print(f"vLLM engine start: {time.perf_counter() - start:.1f} s", flush=True)
    return layout.warmstart


def run_mode(root, iterations, mode, warmstart, buckets, marks, rss) -> dict:
    from mlflow.tracking import MlflowClient

    from a2tgpo.sweep import from_warmstart
    from flows.train import train_flow

    config = from_warmstart(base_config(root, iterations, f"bench-{mode}", MODES[mode]), warmstart)
    buckets.reset()
    marks.clear()
    rss.clear()
    start = time.perf_counter()
    out = train_flow(config=config)
    total = time.perf_counter() - start
    client = MlflowClient(config.tracking.mlflow_uri)
    stages = {
        label: sum(m.value for m in client.get_metric_history(out["mlflow_run_id"], key))
        for label, key in STAGE_KEYS.items()
    }
    loop = marks["end"] - marks["start"]
    return {
        "mode": mode,
        "flow_s": total,
        "loop_s": loop,
        "per_iteration_s": loop / iterations,
        "stages_s": stages,
        "buckets_s": dict(buckets.seconds),
        "trainer_rss_mib": rss.get("trainer", []),
        "eval_greedy_em": out["history"][-1].get("eval_greedy_em"),
    }


def report(results: list[dict], iterations: int) -> str:
    by_mode = {r["mode"]: r for r in results}
    rows = [
        "| per iteration (s) | " + " | ".join(by_mode) + " |",
        "|---" * (len(by_mode) + 1) + "|",
    ]
    lines = {"**wall**": lambda r: r["per_iteration_s"]}
    lines |= {
        label: (lambda r, label=label: r["stages_s"][label] / iterations) for label in STAGE_KEYS
    }
    for bucket in ("storage", "mlflow", "prefect"):
        lines[bucket] = lambda r, b=bucket: r["buckets_s"].get(b, 0.0) / iterations
    for label, value in lines.items():
        rows.append(f"| {label} | " + " | ".join(f"{value(r):.2f}" for r in results) + " |")
    rows.append("| flow total (s) | " + " | ".join(f"{r['flow_s']:.0f}" for r in results) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from a2tgpo.rollout.session import reuse_engines

    buckets, marks, rss = Buckets(), {}, {}
    instrument(buckets, marks, rss)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-iteration-") as tmp, reuse_engines():
        root = Path(tmp)
        warmstart = warm_up(root, args.iterations)
        for mode in args.modes.split(","):
            results.append(run_mode(root, args.iterations, mode, warmstart, buckets, marks, rss))
            print(f"{mode}: {results[-1]['per_iteration_s']:.1f} s per iteration", flush=True)
    print(report(results, args.iterations))
    for r in results:
        if r["trainer_rss_mib"]:
            print(f"{r['mode']}: trainer RSS per step (MiB) {r['trainer_rss_mib']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    by = {r["mode"]: r for r in results}
    wall = {m: r["per_iteration_s"] for m, r in by.items()}
    persistent = by.get("persistent")
    share = (
        sum(persistent["buckets_s"].get(b, 0.0) for b in ("storage", "mlflow", "prefect"))
        / persistent["loop_s"]
        if persistent
        else float("nan")
    )
    nan = float("nan")
    print(
        f"persistent_vs_subprocess={wall.get('subprocess', nan) / wall.get('persistent', nan):.2f} "
        f"overlap_vs_sync={wall.get('persistent', nan) / wall.get('overlap', nan):.2f} "
        f"overhead_share={share:.3f}"
    )


if __name__ == "__main__":
    main()
