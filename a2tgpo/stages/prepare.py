"""The preparation stages around the RL loop: the initial model, the prompt pools, the
fixed held-out sample (`prepare`) and each iteration's training prompts (`prompts`).

The initial policy is the user's model (`model.policy`) or the project's tiny model,
built once (its tokenizer trained on the environment's text) and committed. Prompt
pools come from the synthetic world or the user's dataset files; samples are drawn
without replacement, deterministically by seed. An empty pool or sample is refused
before anything is committed, so a fixed file is never shadowed by an empty pool.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from a2tgpo.config import RunConfig
from a2tgpo.data.checkpoints import local_policy
from a2tgpo.data.directories import commit_directory
from a2tgpo.data.manifest import Manifest
from a2tgpo.data.schemas import PROMPTS
from a2tgpo.data.stage import read_manifest, read_stage, resumable, write_stage
from a2tgpo.data.storage import Storage
from a2tgpo.engines.adapters import check_model_targets
from a2tgpo.envs.prompting import load_template, render_prompts
from a2tgpo.errors import InputError


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
    check_lora_targets(config, storage, init_uri)
    if has_training_prompts(config):  # an evaluation of a search-QA file needs none
        ensure_prompt_pool(config, storage, "train", train_pool_uri)
    ensure_prompt_pool(config, storage, "eval", eval_pool_uri)
    sample_prompts(
        config,
        pool_uri=eval_pool_uri,
        out_uri=eval_prompts_uri,
        count=config.eval.prompts,
        seed=seed,
        per_source=config.eval.prompts_per_source,
    )
    return {
        "init": init_uri,
        "train_pool": train_pool_uri,
        "eval_pool": eval_pool_uri,
        "eval_prompts": eval_prompts_uri,
    }


def has_training_prompts(config: RunConfig) -> bool:
    """Whether the environment has a training split: the synthetic world always does, a
    search-QA run only with `env.dataset`."""
    return config.env.kind == "synthetic" or bool(config.env.dataset)


def check_lora_targets(config: RunConfig, storage: Storage, init_uri: str) -> None:
    """Refuse `model.lora.target_modules` that the initial model lacks now, from its
    config alone, rather than at the first train step after a rollout."""
    if not config.model.lora.enabled:
        return
    uri = config.model.policy or init_uri
    if read_manifest(storage, uri) is not None or Path(uri).exists():
        source = str(local_policy(storage, uri))
    else:  # a hub id: transformers fetches its config.json alone, not the weights
        source = uri
    check_model_targets(source, config.model.lora.target_modules)


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
    """Text to train the tiny model's tokenizer on: the environment's corpus and
    transcripts, or a dataset's questions and the prompt template's instruction."""
    if config.env.kind == "synthetic":
        from a2tgpo.envs.synthetic import SyntheticWorld

        world = SyntheticWorld.from_config(config.env)
        return world.texts()
    pool, _ = prompt_pool_table(config, "train" if has_training_prompts(config) else "eval")
    instruction = load_template(config.env.prompt_template).messages("")
    return [m["content"] for m in instruction if m["content"]] + [
        m["content"] for ms in pool.column("messages").to_pylist() for m in ms
    ]


def prompt_pool_table(config: RunConfig, split: str) -> tuple[pa.Table, dict[str, Any]]:
    """All prompts of a split in the PROMPTS schema, rendered with `env.prompt_template`,
    and the template's counts for the manifest (see `prompting.render_prompts`)."""
    template = load_template(config.env.prompt_template)
    if config.env.kind == "synthetic":
        from a2tgpo.envs.synthetic import SyntheticWorld

        world = SyntheticWorld.from_config(config.env)
        rows = world.to_prompts(split)  # rendered by the world's template already
        if not rows:
            raise InputError(
                f"the synthetic world has no {split} questions: raise env.num_entities "
                "or env.eval_fraction"
            )
        for row in rows:
            row["meta"] = json.dumps(row["meta"])
        counts = {"prompt_template": template.name, "templated": len(rows), "kept": 0}
        return pa.Table.from_pylist(rows, schema=PROMPTS), counts
    from a2tgpo.data.loaders import load_prompts

    path = config.env.dataset if split == "train" else config.env.eval_dataset
    if not path:
        raise InputError(
            f"env.kind='search_qa' needs env.{'dataset' if split == 'train' else 'eval_dataset'}"
        )
    env = config.env
    caps = {"max_question_chars": env.max_question_chars, "max_gold_chars": env.max_gold_chars}
    rows = load_prompts(path, **caps).to_pylist()  # a LoaderError when no prompt is left
    counts = render_prompts(rows, template)
    return pa.Table.from_pylist(rows, schema=PROMPTS), counts


def ensure_prompt_pool(config: RunConfig, storage: Storage, split: str, uri: str) -> str:
    """Commit all prompts of a split at `uri` once."""
    if read_manifest(storage, uri) is None:
        table, counts = prompt_pool_table(config, split)
        stats = {"prompts": table.num_rows, **counts}
        write_stage(storage, uri, table, "prompts", stats=stats)
    return uri


@resumable
def sample_prompts(
    config: RunConfig,
    *,
    pool_uri: str,
    out_uri: str,
    count: int,
    seed: int,
    per_source: int = 0,
) -> Manifest:
    """Commit `count` prompts drawn without replacement from the pool (deterministic by
    seed); with `per_source` > 0, up to that many of each data source instead (a
    benchmark table whose small sources are not drowned by the large ones)."""
    storage = Storage(config.storage)
    if read_manifest(storage, pool_uri) is None and not has_training_prompts(config):
        raise InputError("training on env.kind='search_qa' needs env.dataset (a prompts file)")
    pool = read_stage(storage, pool_uri, "prompts")
    if pool.num_rows == 0:  # committed by a version that did not refuse empty pools
        raise InputError(
            f"the prompt pool {pool_uri} is empty: delete it (or use a new run id) and rerun"
        )
    rng = np.random.default_rng(seed)
    if per_source > 0:
        sources = np.array(pool.column("data_source").to_pylist())
        take = np.concatenate(
            [_draw(rng, np.flatnonzero(sources == s), per_source) for s in np.unique(sources)]
        )
    else:
        take = _draw(rng, np.arange(pool.num_rows), count)
    sample = pool.take(pa.array(np.sort(take)))
    stats = {"prompts": sample.num_rows, "seed": seed}
    if per_source > 0:
        stats["per_source"] = per_source
    return write_stage(storage, out_uri, sample, "prompts", parents=[pool_uri], stats=stats)


def _draw(rng: np.random.Generator, rows: np.ndarray, count: int) -> np.ndarray:
    return rng.choice(rows, size=min(count, rows.size), replace=False)
