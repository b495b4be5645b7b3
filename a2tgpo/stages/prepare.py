"""The preparation stages around the RL loop: the initial model, the prompt pools, the
fixed held-out sample (`prepare`) and each iteration's training prompts (`prompts`).

The initial policy is the user's model (`model.policy`) or the project's tiny model,
built once (its tokenizer trained on the environment's text) and committed. Prompt
pools come from the synthetic world or the user's dataset files; samples are drawn
without replacement, deterministically by seed.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from a2tgpo.config import RunConfig
from a2tgpo.data.directories import commit_directory
from a2tgpo.data.manifest import Manifest
from a2tgpo.data.schemas import PROMPTS
from a2tgpo.data.stage import read_manifest, read_stage, resumable, write_stage
from a2tgpo.data.storage import Storage


def run_prepare(
    config: RunConfig,
    *,
    init_uri: str,
    train_pool_uri: str,
    eval_pool_uri: str,
    eval_prompts_uri: str,
    seed: int,
) -> dict[str, str]:
    """Commit what every iteration reads (each part only once): the initial model, the
    prompt pools and the fixed held-out sample. Returns their URIs by role."""
    storage = Storage(config.storage)
    ensure_initial_model(config, storage, init_uri)
    ensure_prompt_pool(config, storage, "train", train_pool_uri)
    ensure_prompt_pool(config, storage, "eval", eval_pool_uri)
    sample_prompts(
        config,
        pool_uri=eval_pool_uri,
        out_uri=eval_prompts_uri,
        count=config.eval.prompts,
        seed=seed,
    )
    return {
        "init": init_uri,
        "train_pool": train_pool_uri,
        "eval_pool": eval_pool_uri,
        "eval_prompts": eval_prompts_uri,
    }


def ensure_initial_model(config: RunConfig, storage: Storage, uri: str) -> str:
    """The initial policy: the user's model (`uri` is then model.policy, nothing to do),
    or the tiny model, built and committed at `uri` once."""
    if config.model.policy or read_manifest(storage, uri) is not None:
        return uri
    with tempfile.TemporaryDirectory(prefix="tiny-model-") as work:
        build_configured_tiny_model(config, Path(work) / "hf")
        commit_directory(
            storage,
            Path(work),
            uri,
            policy_version=0,
            stats={"kind": "tiny", **config.model.model_dump()},
        )
    return uri


def build_configured_tiny_model(config: RunConfig, out: Path, overwrite: bool = False) -> Path:
    """The tiny model of `config.model.tiny_*`, its tokenizer trained on the environment."""
    from a2tgpo.engines.tiny_model import build_tiny_model

    m = config.model
    return build_tiny_model(
        out,
        environment_texts(config),
        hidden=m.tiny_hidden,
        layers=m.tiny_layers,
        heads=m.tiny_heads,
        vocab_size=m.tiny_vocab,
        max_positions=m.tiny_max_positions,
        seed=config.seed,
        overwrite=overwrite,
    )


def environment_texts(config: RunConfig) -> list[str]:
    """Text to train the tiny model's tokenizer on: the environment's corpus and transcripts."""
    if config.env.kind == "synthetic":
        from a2tgpo.envs.synthetic import SyntheticWorld

        world = SyntheticWorld.from_config(config.env)
        return world.texts()
    pool = prompt_pool_table(config, "train")
    return [q for q in pool.column("question").to_pylist()]


def prompt_pool_table(config: RunConfig, split: str) -> pa.Table:
    """All prompts of a split, in the PROMPTS schema."""
    if config.env.kind == "synthetic":
        from a2tgpo.envs.synthetic import SyntheticWorld

        world = SyntheticWorld.from_config(config.env)
        rows = world.to_prompts(split)
        for row in rows:
            row["meta"] = json.dumps(row["meta"])
        return pa.Table.from_pylist(rows, schema=PROMPTS)
    from a2tgpo.data.loaders import load_prompts

    path = config.env.dataset if split == "train" else config.env.eval_dataset
    if not path:
        raise ValueError(
            f"env.kind='search_qa' needs env.{'dataset' if split == 'train' else 'eval_dataset'}"
        )
    return load_prompts(path)


def ensure_prompt_pool(config: RunConfig, storage: Storage, split: str, uri: str) -> str:
    """Commit all prompts of a split at `uri` once."""
    if read_manifest(storage, uri) is None:
        table = prompt_pool_table(config, split)
        write_stage(storage, uri, table, "prompts", stats={"prompts": table.num_rows})
    return uri


@resumable
def sample_prompts(
    config: RunConfig, *, pool_uri: str, out_uri: str, count: int, seed: int
) -> Manifest:
    """Commit `count` prompts drawn without replacement from the pool (deterministic by seed)."""
    storage = Storage(config.storage)
    pool = read_stage(storage, pool_uri, "prompts")
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(pool.num_rows, size=min(count, pool.num_rows), replace=False))
    sample = pool.take(pa.array(take))
    return write_stage(
        storage,
        out_uri,
        sample,
        "prompts",
        parents=[pool_uri],
        stats={"prompts": sample.num_rows, "seed": seed},
    )
