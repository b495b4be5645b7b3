"""Trajectories from prompts: episodes, the agent loop, outcome rewards, TRAJECTORIES rows.

Samples `rollout.group_size` trajectories per prompt with the agent loop
(`a2tgpo.rollout.agent`) on vLLM or HF, scores each trajectory's outcome (EM / F1 with
the format penalty, spec "Rewards") and builds the rows in the TRAJECTORIES schema.
The rollout and evaluate stages (`a2tgpo.stages`) commit them; the warm-start builds its
demonstrations through the same `trajectories_table`.

Prompts whose chat-templated length leaves no room for a turn (the trajectory budget
or the engine's context) are skipped, not generated: a 0-turn trajectory has nothing
to train on. The manifest counts them (`skipped_too_long_prompts`) and the searches
and tool errors of the rollout (`tool_calls`, `tool_errors`, `tool_error_first`);
both are logged as warnings (tool errors when most searches fail).

Departure from the papers: the trajectory keeps the engine's own log-probs of its
tokens (`rollout_logprobs`, of the distribution `rollout.logprobs` names) so the
trainer can log the engine/trainer mismatch per turn.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from a2tgpo.config import RolloutConfig, RunConfig
from a2tgpo.data.checkpoints import adapter_path, policy_files
from a2tgpo.data.directories import local_cache_dir
from a2tgpo.data.manifest import Manifest
from a2tgpo.data.schemas import TRAJECTORIES
from a2tgpo.data.stage import read_stage, write_stage
from a2tgpo.data.storage import Storage
from a2tgpo.engines.base import Engine
from a2tgpo.envs.rewards import score_response
from a2tgpo.envs.search import make_search_tool
from a2tgpo.envs.tools import SearchTool
from a2tgpo.errors import InputError
from a2tgpo.rollout.agent import AgentLoop, Episode
from a2tgpo.rollout.session import EngineSession
from a2tgpo.seeds import derive_seed

log = logging.getLogger(__name__)

MOST_SEARCHES_FAIL = 0.5  # a rollout warns when more than this share of its searches fail


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


def first_turn_room(prompt_length: int, rollout: RolloutConfig, context: int | None) -> int:
    """Tokens the first turn may generate after a prompt: `max_turn_tokens`, cut by the
    trajectory budget and the engine's context (None: no limit of its own)."""
    limit = rollout.max_total_tokens if context is None else min(rollout.max_total_tokens, context)
    return min(rollout.max_turn_tokens, limit - prompt_length)


def drop_too_long(
    episodes: list[Episode], rollout: RolloutConfig, context: int | None
) -> tuple[list[Episode], list[str]]:
    """(episodes with room for a turn, the prompt ids of those without, in order).

    Every episode of a prompt has the same prompt, so a prompt is kept or dropped whole."""
    fits = [first_turn_room(ep.prompt_length, rollout, context) >= 1 for ep in episodes]
    kept = [ep for ep, ok in zip(episodes, fits, strict=True) if ok]
    skipped = dict.fromkeys(ep.prompt_id for ep, ok in zip(episodes, fits, strict=True) if not ok)
    return kept, list(skipped)


@dataclass
class RolloutRun:
    """Finished episodes and what the TRAJECTORIES rows cannot say: skipped prompts."""

    episodes: list[Episode]
    skipped_prompts: list[str]

    def stats(self) -> dict[str, Any]:
        """Manifest stats: prompts skipped as too long, searches and tool errors."""
        first = next((ep.first_tool_error for ep in self.episodes if ep.first_tool_error), None)
        return {
            "skipped_too_long_prompts": len(self.skipped_prompts),
            "tool_calls": sum(ep.tool_calls for ep in self.episodes),
            "tool_errors": sum(ep.tool_errors for ep in self.episodes),
            **({"tool_error_first": first} if first else {}),
        }


def run_episodes(
    config: RunConfig,
    prompts: pa.Table,
    engine: Engine,
    tool: SearchTool,
    *,
    seed: int,
    progress: bool = True,
) -> RolloutRun:
    """`rollout.group_size` episodes per prompt that fits the budget, run to completion."""
    episodes = build_episodes(prompts, engine.tokenizer, config.rollout.group_size, seed)
    context = getattr(engine, "max_model_len", None)
    episodes, skipped = drop_too_long(episodes, config.rollout, context)
    if skipped and not episodes:
        raise InputError(
            f"all {prompts.num_rows} prompts are too long for the token budget "
            f"({_budget(config.rollout, context)}): raise the budget or shorten the prompts."
        )
    if skipped:
        log.warning(
            "rollout: skipped %d of %d prompts too long for the token budget (%s; first: %s)",
            len(skipped),
            prompts.num_rows,
            _budget(config.rollout, context),
            skipped[0],
        )
    with tqdm(total=len(episodes), desc="rollout", unit="traj", disable=not progress) as bar:
        AgentLoop(engine, tool, config.rollout).run(
            episodes, on_finish=lambda done: bar.update(done - bar.n)
        )
    run = RolloutRun(episodes, skipped)
    warn_on_tool_errors(run.stats())
    return run


def _budget(rollout: RolloutConfig, context: int | None) -> str:
    budget = f"rollout.max_total_tokens={rollout.max_total_tokens}"
    return budget if context is None else f"{budget}, engine context {context}"


def warn_on_tool_errors(stats: dict[str, Any]) -> None:
    """A warning when most of a rollout's searches failed, naming the first reason."""
    calls, errors = stats.get("tool_calls", 0), stats.get("tool_errors", 0)
    if calls and errors / calls > MOST_SEARCHES_FAIL:
        log.warning(
            "rollout: %d of %d searches failed (first: %s); check the retriever",
            errors,
            calls,
            stats.get("tool_error_first", "unknown"),
        )


def trajectories_table(
    episodes: list[Episode],
    prompts: pa.Table,
    config: RunConfig,
    policy_version: int,
    engine_name: str | None = None,
    staleness: int | None = None,
) -> pa.Table:
    """The TRAJECTORIES rows of finished episodes, with outcome rewards.

    `engine_name` is what produced the tokens (default: the configured rollout engine;
    the warm-start's demonstrations say "demonstration"); `staleness` is how many
    versions the trained policy is ahead of `policy_version` (None: not an RL rollout)."""
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
                    "engine": engine_name or config.rollout.engine,
                },
                "rollout_logprobs": ep.logprobs,
                "staleness": staleness,
            }
        )
    return pa.Table.from_pylist(rows, schema=TRAJECTORIES)


def rollout_stats(table: pa.Table, prompts: pa.Table | None = None) -> dict[str, Any]:
    """What the manifest and the tracker record about a trajectories dataset.

    With the prompts, EM / F1 per hop count too (`by_hops`), where the prompts' meta
    says how many lookups each question needs (the synthetic worlds)."""
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
        **({"by_hops": by_hops} if (by_hops := metrics_by_hops(table, prompts)) else {}),
    }


def metrics_by_source(table: pa.Table) -> dict[str, dict[str, float]]:
    """EM, F1 and count per data source (the benchmarks of search QA)."""
    return _metrics_by(table, np.array(table.column("data_source").to_pylist()))


def metrics_by_hops(table: pa.Table, prompts: pa.Table | None) -> dict[str, dict[str, float]]:
    """EM, F1 and count per hop count, from the prompts' meta; {} when it has none."""
    if prompts is None or "meta" not in prompts.column_names:
        return {}
    hops = {}
    for row in prompts.select(["prompt_id", "meta"]).to_pylist():
        meta = json.loads(row["meta"]) if row["meta"] else {}
        if "hops" in meta:
            hops[row["prompt_id"]] = str(meta["hops"])
    if not hops:
        return {}
    keys = np.array([hops.get(p, "unknown") for p in table.column("prompt_id").to_pylist()])
    return _metrics_by(table, keys)


def _metrics_by(table: pa.Table, keys: np.ndarray) -> dict[str, dict[str, float]]:
    em, f1 = table.column("em").to_numpy(), table.column("f1").to_numpy()
    return {
        str(key): {
            "em": float(em[keys == key].mean()),
            "f1": float(f1[keys == key].mean()),
            "count": int((keys == key).sum()),
        }
        for key in np.unique(keys)
    }


def generate_trajectories(
    config: RunConfig,
    prompts: pa.Table,
    engine: Engine,
    tool: SearchTool,
    *,
    seed: int,
    policy_version: int,
    progress: bool = True,
) -> pa.Table:
    """Run the agent loop on `rollout.group_size` episodes per prompt; the TRAJECTORIES rows
    (none for a prompt too long for the budget)."""
    run = run_episodes(config, prompts, engine, tool, seed=seed, progress=progress)
    return trajectories_table(run.episodes, prompts, config, policy_version)


def commit_trajectories(
    config: RunConfig,
    *,
    prompts_uri: str,
    policy_uri: str,
    out_uri: str,
    policy_version: int,
    seed: int,
    session: EngineSession,
    tool: SearchTool | None = None,
    progress: bool = True,
    staleness: int = 0,
) -> Manifest:
    """Roll out every prompt of `prompts_uri` with the policy at `policy_uri` (in the
    session's engine) and commit the trajectories at `out_uri` with their stats."""
    storage = Storage(config.storage)
    prompts = read_stage(storage, prompts_uri, "prompts")
    if prompts.num_rows == 0:
        raise InputError(f"prompts dataset {prompts_uri} is empty")
    tool = tool or make_search_tool(config.env, cache_dir=str(local_cache_dir()))
    policy = policy_files(storage, policy_uri)
    engine = session.engine_for(str(policy.model_dir), adapter_path(policy))
    run = run_episodes(config, prompts, engine, tool, seed=seed, progress=progress)
    table = trajectories_table(run.episodes, prompts, config, policy_version, staleness=staleness)
    return write_stage(
        storage,
        out_uri,
        table,
        "trajectories",
        policy_version=policy_version,
        parents=[prompts_uri, policy_uri],
        stats=rollout_stats(table, prompts) | run.stats() | {"staleness": staleness},
        rows_per_part=config.storage.rows_per_part,
    )
