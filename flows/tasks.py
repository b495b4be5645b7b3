"""Prefect tasks: one per declared stage (`a2tgpo.stages.contract.STAGES`), generated.

Tasks pass the config, an iteration and the engine session; each plans its URIs
through the stage contract and returns (result, seconds). Every stage function returns
at once when its output is already committed, so a rerun of a crashed flow resumes
from the last committed stage; that is why no Prefect result caching is used: storage
is the single source of truth. I/O-bound stages retry with backoff; the train step
runs its DeepSpeed workers in subprocesses (`a2tgpo.training.launcher`).
"""

from __future__ import annotations

import time
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from a2tgpo.config import RunConfig
from a2tgpo.rollout.session import EngineSession
from a2tgpo.stages.contract import STAGES, Stage, StagePlan

IO_RETRIES = {"retries": 2, "retry_delay_seconds": [5, 30], "cache_policy": NO_CACHE}
ONCE = {"retries": 0, "cache_policy": NO_CACHE}


def _stage_task(stage: Stage):
    options = IO_RETRIES if stage.io_bound else ONCE
    run_name = f"{stage.name}-iter{{iteration}}" if stage.per_iteration else stage.name

    @task(name=stage.name, task_run_name=run_name, description=stage.summary, **options)
    def run(
        config: RunConfig,
        iteration: int | None = None,
        session: EngineSession | None = None,
        plan: StagePlan | None = None,
    ) -> tuple[Any, float]:
        plan = plan or stage.plan(config, iteration)
        start = time.perf_counter()
        result = stage.run(config, plan, session)
        return result, time.perf_counter() - start

    return run


TASKS = {name: _stage_task(stage) for name, stage in STAGES.items()}


def submit_stage(
    name: str, config: RunConfig, iteration: int, session: EngineSession | None = None
):
    """Start stage `name` in the flow's task runner (a thread); a future of (result, seconds)."""
    return TASKS[name].submit(config, iteration, session)


def run_stage(
    name: str,
    config: RunConfig,
    iteration: int | None = None,
    session: EngineSession | None = None,
    plan: StagePlan | None = None,
) -> tuple[Any, float]:
    """Run stage `name` for `iteration` as a Prefect task; (its result, wall seconds).
    `plan` replaces the layout's plan (e.g. evaluating a policy from elsewhere)."""
    return TASKS[name](config, iteration, session, plan)
