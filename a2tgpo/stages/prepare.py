"""The run layout and the preparation stages around the RL loop.

Every stage output has a fixed URI under `{storage.root}/{run_id}/`:

    model-init/                     the initial policy (the tiny model, unless model.policy)
    prompts-train/, prompts-eval/   the prompt pools
    warmstart/demos/, warmstart/checkpoint/
    iter=00000/prompts/ trajectories/ scored/ advantaged/ checkpoint/ eval-greedy/ eval-sampled/

so a rerun finds what a crashed run committed and redoes only the rest. Iteration k
trains the policy of version k (the warm-start or initial model for k = 0) and
commits version k + 1 as `iter=k/checkpoint`.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from a2tgpo.config import RunConfig
from a2tgpo.data.directories import commit_directory
from a2tgpo.data.manifest import Manifest
from a2tgpo.data.schemas import PROMPTS
from a2tgpo.data.stage import read_manifest, read_stage, write_stage
from a2tgpo.data.storage import Storage


@dataclass(frozen=True)
class RunLayout:
    storage: Storage
    run_id: str

    @classmethod
    def of(cls, config: RunConfig) -> RunLayout:
        return cls(Storage(config.storage), config.run_id)

    def uri(self, *parts: str) -> str:
        return self.storage.join(self.run_id, *parts)

    def stage(self, iteration: int, name: str) -> str:
        return self.storage.stage_uri(self.run_id, iteration, name)

    @property
    def init_model(self) -> str:
        return self.uri("model-init")

    def pool(self, split: str) -> str:
        return self.uri(f"prompts-{split}")

    @property
    def demos(self) -> str:
        return self.uri("warmstart", "demos")

    @property
    def warmstart(self) -> str:
        return self.uri("warmstart", "checkpoint")

    def initial_policy(self, config: RunConfig) -> str:
        """The policy iteration 0 starts from."""
        if config.warmstart.enabled:
            return self.warmstart
        return config.model.policy or self.init_model

    def latest_policy(self, config: RunConfig) -> tuple[str, int]:
        """The newest committed checkpoint of the run and its version (else the initial one)."""
        for k in reversed(range(config.iterations)):
            uri = self.stage(k, "checkpoint")
            if read_manifest(self.storage, uri) is not None:
                return uri, k + 1
        return self.initial_policy(config), 0

    def policy(self, config: RunConfig, iteration: int) -> str:
        """The policy that iteration `iteration` trains (and rolls out with)."""
        if iteration == 0:
            return self.initial_policy(config)
        return self.stage(iteration - 1, "checkpoint")


def ensure_initial_model(config: RunConfig, layout: RunLayout) -> str:
    """The initial policy's URI: the user's model, or the tiny model built and committed once."""
    if config.model.policy:
        return config.model.policy
    if read_manifest(layout.storage, layout.init_model) is None:
        with tempfile.TemporaryDirectory(prefix="tiny-model-") as work:
            build_configured_tiny_model(config, Path(work) / "hf")
            commit_directory(
                layout.storage,
                Path(work),
                layout.init_model,
                policy_version=0,
                stats={"kind": "tiny", **config.model.model_dump()},
            )
    return layout.init_model


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

        world = SyntheticWorld(config.env.seed, config.env.num_entities, config.env.max_hops)
        return world.texts()
    pool = prompt_pool_table(config, "train")
    return [q for q in pool.column("question").to_pylist()]


def prompt_pool_table(config: RunConfig, split: str) -> pa.Table:
    """All prompts of a split, in the PROMPTS schema."""
    if config.env.kind == "synthetic":
        from a2tgpo.envs.synthetic import SyntheticWorld

        world = SyntheticWorld(config.env.seed, config.env.num_entities, config.env.max_hops)
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


def ensure_prompt_pool(config: RunConfig, layout: RunLayout, split: str) -> str:
    uri = layout.pool(split)
    if read_manifest(layout.storage, uri) is None:
        table = prompt_pool_table(config, split)
        write_stage(layout.storage, uri, table, "prompts", stats={"prompts": table.num_rows})
    return uri


def sample_prompts(
    config: RunConfig, layout: RunLayout, pool_uri: str, out_uri: str, count: int, seed: int
) -> Manifest:
    """Commit `count` prompts drawn without replacement from the pool (deterministic by seed)."""
    existing = read_manifest(layout.storage, out_uri)
    if existing is not None:
        return existing
    pool = read_stage(layout.storage, pool_uri, "prompts")
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(pool.num_rows, size=min(count, pool.num_rows), replace=False))
    sample = pool.take(pa.array(take))
    return write_stage(
        layout.storage,
        out_uri,
        sample,
        "prompts",
        parents=[pool_uri],
        stats={"prompts": sample.num_rows, "seed": seed},
    )


# Settings a resumed run may change: how long it runs and where it reports to.
_RESUMABLE = ("iterations", "storage.", "tracking.")


def pin_run_config(config: RunConfig, layout: RunLayout) -> None:
    """Record the run's config on its first start; on a rerun, refuse a different one.

    A rerun resumes from the committed stages, so a run id reused with another preset or
    setting would silently mix the two experiments' data. Only `iterations` and the
    storage / tracking sections may change.
    """
    from a2tgpo.config import flatten

    uri = layout.uri("run-config.json")
    ours = {k: v for k, v in flatten(config).items() if not k.startswith(_RESUMABLE)}
    ours = json.loads(json.dumps(ours, default=str))  # as stored: JSON types
    if not layout.storage.exists(uri):
        layout.storage.write_bytes(uri, json.dumps(ours, indent=1, sort_keys=True).encode())
        return
    pinned = json.loads(layout.storage.read_bytes(uri))
    changed = sorted(k for k in ours.keys() | pinned.keys() if ours.get(k) != pinned.get(k))
    if changed:
        shown = ", ".join(f"{k}: {pinned.get(k)!r} -> {ours.get(k)!r}" for k in changed[:8])
        raise ValueError(
            f"run {config.run_id!r} was started with other settings ({shown}); "
            "resume it with its own config, or give this one a new run_id"
        )
