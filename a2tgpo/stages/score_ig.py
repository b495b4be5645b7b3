"""The score-ig stage: trajectories dataset + the policy that generated it -> scored.

Scores every trajectory with the configured scorer (`a2tgpo.scoring.trajectories`:
v(h) after each turn boundary, IG per turn) and commits the SCORED schema. The packed
and naive scorers run the policy in-process (HF; a LoRA policy's adapter merged into its
base); the vLLM scorer borrows the rollout engine (base + adapter).
"""

from __future__ import annotations

import time

from a2tgpo.config import RunConfig
from a2tgpo.data.checkpoints import adapter_path, policy_files
from a2tgpo.data.manifest import Manifest
from a2tgpo.data.stage import read_manifest, read_stage, resumable, write_stage
from a2tgpo.data.storage import Storage
from a2tgpo.envs.prompting import resolved_ig
from a2tgpo.rollout.session import EngineSession
from a2tgpo.scoring.trajectories import ig_stats, make_scorer, score_trajectories


@resumable
def run_score_ig(
    config: RunConfig,
    *,
    trajectories_uri: str,
    policy_uri: str,
    out_uri: str,
    session: EngineSession | None = None,
) -> Manifest:
    """Score a committed trajectories dataset with the policy that generated it; commit it."""
    storage = Storage(config.storage)
    table = read_stage(storage, trajectories_uri, "trajectories")
    source = read_manifest(storage, trajectories_uri)
    policy = policy_files(storage, policy_uri)
    policy_dir, adapter_dir = str(policy.model_dir), adapter_path(policy)
    ig = resolved_ig(config)  # the answer prefix of the prompt template
    start = time.perf_counter()
    if config.ig.scorer == "vllm":
        with EngineSession.borrow(session, config) as engines:
            engine = engines.engine_for(policy_dir, adapter_dir)
            scorer = make_scorer("vllm", policy_dir, ig, config.model.dtype, engine)
            scored = score_trajectories(table, scorer, engine.tokenizer, ig)
    else:
        from transformers import AutoTokenizer

        scorer = make_scorer(ig.scorer, policy_dir, ig, config.model.dtype, adapter_dir=adapter_dir)
        tokenizer = AutoTokenizer.from_pretrained(policy_dir)
        scored = score_trajectories(table, scorer, tokenizer, ig)
    seconds = time.perf_counter() - start
    return write_stage(
        storage,
        out_uri,
        scored,
        "scored",
        policy_version=source.policy_version if source else None,
        parents=[trajectories_uri, policy_uri],
        stats={
            "scorer": ig.scorer,
            "answer_prefix": ig.answer_prefix,
            "seconds": seconds,
            **ig_stats(scored),
        },
        rows_per_part=config.storage.rows_per_part,
    )
