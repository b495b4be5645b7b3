"""The rollout stage: prompts dataset + policy -> trajectories dataset.

Reads a committed prompts dataset, samples `rollout.group_size` trajectories per
prompt with the agent loop (`a2tgpo.rollout.agent`) on vLLM or HF, scores each
trajectory's outcome (EM / F1 with the format penalty, spec "Rewards"), and commits
the rows in the TRAJECTORIES schema. A committed output is never redone.

Departure from the papers: the trajectory keeps the engine's own log-probs of its
tokens (`rollout_logprobs`, unscaled model log-probs) so the trainer can log the
engine/trainer mismatch per turn.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from a2tgpo.config import RunConfig
from a2tgpo.data.manifest import Manifest
from a2tgpo.data.schemas import TRAJECTORIES
from a2tgpo.data.stage import read_manifest, read_stage, write_stage
from a2tgpo.data.storage import Storage
from a2tgpo.engines.base import Engine
from a2tgpo.envs.rewards import score_response
from a2tgpo.envs.tools import SearchTool, make_search_tool
from a2tgpo.rollout.agent import AgentLoop, Episode, derive_seed

log = logging.getLogger(__name__)


def build_episodes(prompts: pa.Table, tokenizer, group_size: int, seed: int) -> list[Episode]:
    """G episodes per prompt, each with the chat-templated prompt tokens and its own seed."""
    episodes = []
    for row in prompts.select(["prompt_id", "messages"]).to_pylist():
        prompt_ids = list(
            tokenizer.apply_chat_template(
                row["messages"], add_generation_prompt=True, tokenize=True, return_dict=False
            )
        )
        for g in range(group_size):
            episodes.append(
                Episode(
                    prompt_id=row["prompt_id"],
                    trajectory_id=f"{row['prompt_id']}/s{seed}/{g}",
                    sample_index=g,
                    seed=derive_seed(seed, row["prompt_id"], g),
                    token_ids=list(prompt_ids),
                    prompt_length=len(prompt_ids),
                )
            )
    return episodes


def trajectories_table(
    episodes: list[Episode], prompts: pa.Table, config: RunConfig, policy_version: int
) -> pa.Table:
    """The TRAJECTORIES rows of finished episodes, with outcome rewards."""
    by_id = {
        r["prompt_id"]: r for r in prompts.select(["prompt_id", "golds", "data_source"]).to_pylist()
    }
    rows: list[dict[str, Any]] = []
    for ep in episodes:
        prompt = by_id[ep.prompt_id]
        reward = score_response(
            ep.response_text, prompt["golds"], config.reward.metric, config.reward.format_penalty
        )
        rows.append(
            {
                "prompt_id": ep.prompt_id,
                "trajectory_id": ep.trajectory_id,
                "sample_index": ep.sample_index,
                "policy_version": policy_version,
                "data_source": prompt["data_source"],
                "golds": prompt["golds"],
                "token_ids": ep.token_ids,
                "loss_mask": ep.loss_mask,
                "prompt_length": ep.prompt_length,
                "turns": ep.turns,
                "answer": reward.answer,
                "outcome": reward.outcome,
                "em": reward.em,
                "f1": reward.f1,
                "finish_reason": ep.finish_reason,
                "sampling": {
                    "temperature": config.rollout.temperature,
                    "top_p": config.rollout.top_p,
                    "max_turn_tokens": config.rollout.max_turn_tokens,
                    "seed": ep.seed,
                    "engine": config.rollout.engine,
                },
                "rollout_logprobs": ep.logprobs,
            }
        )
    return pa.Table.from_pylist(rows, schema=TRAJECTORIES)


def rollout_stats(table: pa.Table) -> dict[str, Any]:
    """What the manifest and the tracker record about a trajectories dataset."""
    turns = np.array([len(t) for t in table.column("turns").to_pylist()])
    generated = int(sum(sum(m) for m in table.column("loss_mask").to_pylist()))
    actions = Counter(
        a for t in table.column("turns").to_pylist() for a in (x["action"] for x in t)
    )
    return {
        "trajectories": table.num_rows,
        "reward_mean": float(np.mean(table.column("outcome"))),
        "em_mean": float(np.mean(table.column("em"))),
        "f1_mean": float(np.mean(table.column("f1"))),
        "turns_mean": float(turns.mean()) if turns.size else 0.0,
        "turns_max": int(turns.max()) if turns.size else 0,
        "generated_tokens": generated,
        "finish_reasons": dict(Counter(table.column("finish_reason").to_pylist())),
        "actions": dict(actions),
        "by_source": metrics_by_source(table),
    }


def metrics_by_source(table: pa.Table) -> dict[str, dict[str, float]]:
    """EM, F1 and count per data source (the benchmarks of search QA)."""
    sources = np.array(table.column("data_source").to_pylist())
    em, f1 = table.column("em").to_numpy(), table.column("f1").to_numpy()
    return {
        str(src): {
            "em": float(em[sources == src].mean()),
            "f1": float(f1[sources == src].mean()),
            "count": int((sources == src).sum()),
        }
        for src in np.unique(sources)
    }


def run_rollout(
    config: RunConfig,
    *,
    prompts_uri: str,
    policy_dir: str,
    out_uri: str,
    policy_version: int,
    engine: Engine | None = None,
    tool: SearchTool | None = None,
    parents: list[str] | None = None,
    progress: bool = True,
) -> Manifest:
    """Generate and commit the trajectories of every prompt in `prompts_uri`.

    `engine` may be a running engine (already holding this policy); otherwise one is
    started from `policy_dir` and closed at the end. Returns the committed manifest
    (the existing one, untouched, when the stage was already committed).
    """
    storage = Storage(config.storage)
    existing = read_manifest(storage, out_uri)
    if existing is not None:
        log.info("rollout %s already committed; nothing to do", out_uri)
        return existing
    prompts = read_stage(storage, prompts_uri, "prompts")
    if prompts.num_rows == 0:
        raise ValueError(f"prompts dataset {prompts_uri} is empty")
    tool = tool or make_search_tool(config.env, cache_dir=local_cache_dir())
    own_engine = engine is None
    if own_engine:
        from a2tgpo.engines import make_engine

        engine = make_engine(config.rollout.engine, policy_dir, **engine_options(config))
    try:
        seed = derive_seed(config.rollout.seed, config.seed, policy_version)
        episodes = build_episodes(prompts, engine.tokenizer, config.rollout.group_size, seed)
        with tqdm(total=len(episodes), desc="rollout", unit="traj", disable=not progress) as bar:
            AgentLoop(engine, tool, config.rollout).run(
                episodes, on_finish=lambda done: bar.update(done - bar.n)
            )
    finally:
        if own_engine:
            engine.close()
    table = trajectories_table(episodes, prompts, config, policy_version)
    return write_stage(
        storage,
        out_uri,
        table,
        "trajectories",
        policy_version=policy_version,
        parents=parents if parents is not None else [prompts_uri, policy_dir],
        stats=rollout_stats(table),
        rows_per_part=config.storage.rows_per_part,
    )


def engine_options(config: RunConfig) -> dict[str, Any]:
    """Keyword arguments of `make_engine` from the config."""
    return {
        "dtype": config.model.dtype,
        "max_model_len": config.rollout.max_total_tokens + config.rollout.max_turn_tokens,
        "seed": config.seed,
        "kv_cache_gib": config.rollout.kv_cache_gib,
        "tensor_parallel_size": config.rollout.tensor_parallel_size,
    }


def local_cache_dir() -> str:
    """A local folder for caches (BM25 indexes, materialized checkpoints): $A2TGPO_CACHE."""
    root = os.environ.get("A2TGPO_CACHE") or str(Path.home() / ".cache" / "a2tgpo")
    Path(root).mkdir(parents=True, exist_ok=True)
    return root
