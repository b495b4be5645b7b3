"""Prefect tasks: one per stage, each a thin call into the library.

Tasks pass URIs and manifests, never datasets. Every stage function returns at once
when its output is already committed, so a rerun of a crashed flow resumes from the
last committed stage; that is why no Prefect result caching is used: storage is the
single source of truth. I/O-bound stages retry with backoff; the train step runs its
DeepSpeed workers in subprocesses (`a2tgpo.training.launcher`).
"""

from __future__ import annotations

import time
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from a2tgpo.config import RunConfig
from a2tgpo.data.manifest import Manifest
from a2tgpo.pipeline import (
    RunLayout,
    ensure_initial_model,
    ensure_prompt_pool,
    sample_prompts,
)
from a2tgpo.rollout.agent import derive_seed
from a2tgpo.rollout.evaluate import run_evaluate
from a2tgpo.rollout.session import EngineSession
from a2tgpo.rollout.stage import run_rollout
from a2tgpo.scoring.stage import run_score_ig
from a2tgpo.training.advantages import run_advantages
from a2tgpo.training.checkpoints import local_policy
from a2tgpo.training.launcher import run_train_step
from a2tgpo.training.warmstart import run_warmstart

IO_RETRIES = {"retries": 2, "retry_delay_seconds": [5, 30], "cache_policy": NO_CACHE}
ONCE = {"retries": 0, "cache_policy": NO_CACHE}


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    start = time.perf_counter()
    return fn(*args, **kwargs), time.perf_counter() - start


@task(name="prepare", **IO_RETRIES)
def prepare(config: RunConfig) -> dict[str, str]:
    """Initial model, prompt pools and the fixed held-out evaluation prompts."""
    layout = RunLayout.of(config)
    uris = {
        "init": ensure_initial_model(config, layout),
        "train_pool": ensure_prompt_pool(config, layout, "train"),
        "eval_pool": ensure_prompt_pool(config, layout, "eval"),
    }
    uris["eval_prompts"] = layout.uri("eval-prompts")
    sample_prompts(
        config,
        layout,
        uris["eval_pool"],
        uris["eval_prompts"],
        config.eval.prompts,
        seed=derive_seed("eval", config.seed) % (1 << 32),
    )
    return uris


@task(name="warmstart", **ONCE)
def warmstart(config: RunConfig, init_uri: str) -> tuple[Manifest, float]:
    layout = RunLayout.of(config)
    return timed(
        run_warmstart, config, init_uri=init_uri, demos_uri=layout.demos, out_uri=layout.warmstart
    )


@task(name="sample-prompts", **IO_RETRIES)
def prompts(config: RunConfig, iteration: int, pool_uri: str) -> str:
    layout = RunLayout.of(config)
    uri = layout.stage(iteration, "prompts")
    seed = derive_seed("prompts", config.seed, iteration) % (1 << 32)
    sample_prompts(config, layout, pool_uri, uri, config.rollout.prompts_per_iteration, seed)
    return uri


@task(name="rollout", **ONCE)
def rollout(config: RunConfig, iteration: int, policy_uri: str, session: EngineSession):
    layout = RunLayout.of(config)
    policy_dir = str(local_policy(layout.storage, policy_uri))
    return timed(
        run_rollout,
        config,
        prompts_uri=layout.stage(iteration, "prompts"),
        policy_dir=policy_dir,
        out_uri=layout.stage(iteration, "trajectories"),
        policy_version=iteration,
        engine=session.engine_for(policy_dir),
        parents=[layout.stage(iteration, "prompts"), policy_uri],
    )


@task(name="score-ig", **ONCE)
def score_ig(config: RunConfig, iteration: int, policy_uri: str, session: EngineSession):
    layout = RunLayout.of(config)
    engine = None
    if config.ig.scorer == "vllm":
        engine = session.engine_for(str(local_policy(layout.storage, policy_uri)))
    return timed(
        run_score_ig,
        config,
        trajectories_uri=layout.stage(iteration, "trajectories"),
        policy_uri=policy_uri,
        out_uri=layout.stage(iteration, "scored"),
        engine=engine,
    )


@task(name="advantages", **IO_RETRIES)
def advantages(config: RunConfig, iteration: int):
    layout = RunLayout.of(config)
    return timed(
        run_advantages,
        config,
        scored_uri=layout.stage(iteration, "scored"),
        out_uri=layout.stage(iteration, "advantaged"),
    )


@task(name="train-step", **ONCE)
def train_step(config: RunConfig, iteration: int, policy_uri: str, reference_uri: str):
    layout = RunLayout.of(config)
    return timed(
        run_train_step,
        config,
        advantaged_uri=layout.stage(iteration, "advantaged"),
        policy_uri=policy_uri,
        out_uri=layout.stage(iteration, "checkpoint"),
        policy_version=iteration + 1,
        reference_uri=reference_uri,
    )


@task(name="evaluate", **ONCE)
def evaluate(
    config: RunConfig,
    policy_uri: str,
    policy_version: int,
    prompts_uri: str,
    out_prefix: str,
    session: EngineSession,
) -> tuple[dict[str, Manifest], float]:
    layout = RunLayout.of(config)
    policy_dir = str(local_policy(layout.storage, policy_uri))
    return timed(
        run_evaluate,
        config,
        prompts_uri=prompts_uri,
        policy_dir=policy_dir,
        policy_uri=policy_uri,
        out_prefix=out_prefix,
        policy_version=policy_version,
        engine=session.engine_for(policy_dir),
    )
