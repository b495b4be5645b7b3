"""Named experiments: functions returning a full RunConfig (no pile of flags).

`embedded` is what `make run` trains: the project's tiny model on the synthetic
multi-hop world, on 2 CPU cores in minutes. The estimator presets are the paper's
comparison at that scale: GRPO and IGPO baselines, A²TGPO, and A²TGPO with each of
its three components switched off. They share one MLflow experiment
(`a2tgpo-estimators-<env>`), so the dashboard shows them side by side.

`hard` and `hard-<estimator>` run the same comparison on the hard synthetic world
(`env.world=hard`: 1- to 4-hop questions, namesakes as distractors, 400 held-out
questions about unseen start entities), in the experiment
`a2tgpo-estimators-synthetic-hard`.

The reference presets for a cluster, one per released recipe, live in
`a2tgpo.reference_presets` with a table of their settings and sources:
`a2tgpo-qwen3-4b` (the released A²TGPO code) and `search-qa-7b` (IGPO's recipe).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from typing import Any

from a2tgpo.config import RunConfig
from a2tgpo.config_ops import apply_overrides, dotted, merge_config
from a2tgpo.reference_presets import (
    a2tgpo_qwen3_4b,
    a2tgpo_qwen3_4b_lora,
    search_qa_7b,
    search_qa_7b_lora,
)


def embedded() -> RunConfig:
    """The default run: tiny model, synthetic 2-hop world, vLLM on CPU, ZeRO-3 on CPU.

    Tuned so that reward rises visibly within ~10 minutes on 2 cores: with 16 prompts
    per iteration the prompt-sampling noise hid any learning, so each iteration takes
    most of the world's training questions, and takes 8 optimizer steps on them
    (2 epochs x 4 mini-batches) at a learning rate that a tiny model tolerates.
    """
    return apply_overrides(
        RunConfig(preset="embedded"),
        [
            "iterations=8",
            "rollout.prompts_per_iteration=96",
            "rollout.group_size=8",
            "train.learning_rate=1e-3",
            "train.ppo_epochs=2",
            "train.mini_batches=4",
            "eval.every=4",
        ],
    )


def embedded_overlap() -> RunConfig:
    """The embedded run with iteration k+1's rollout overlapped with train step k (one
    policy version stale) and truncated importance sampling (cap 2) correcting for it."""
    return apply_overrides(
        embedded(),
        ["preset=embedded-overlap", "pipeline.overlap=true", "train.rollout_correction=tis"],
    )


def embedded_lora() -> RunConfig:
    """The embedded run training LoRA adapters (rank 8 on every linear layer, alpha 16) on
    the warm-started tiny policy instead of all its weights. Adapters need a larger
    learning rate than full fine-tuning (the update is a low-rank product that starts at
    zero): 3e-3, 3x the embedded run's. 1e-2 (the 10x of "LoRA Without Regret") rose for 4
    iterations, then fell back with 3-16% of tokens clipped (benchmarks/RESULTS.md)."""
    return apply_overrides(
        embedded(), ["preset=embedded-lora", "model.lora.rank=8", "train.learning_rate=3e-3"]
    )


def _estimator(preset_name: str, **estimator: Any) -> RunConfig:
    config = embedded()
    return config.model_copy(
        update={
            "preset": preset_name,
            "estimator": config.estimator.model_copy(update=estimator),
        }
    )


def grpo() -> RunConfig:
    """Outcome-only GRPO: one advantage per trajectory, constant clip."""
    return _estimator("grpo", name="grpo")


def igpo() -> RunConfig:
    """IGPO: IG normalized per prompt (pooled), plain discounted sum, alpha = 1."""
    return _estimator("igpo", name="igpo")


def a2tgpo() -> RunConfig:
    """A²TGPO: per-(prompt, turn) normalization, sqrt(n) rescale, adaptive turn clips."""
    return _estimator("a2tgpo", name="a2tgpo")


def a2tgpo_no_turn_norm() -> RunConfig:
    """Ablation: pooled IG normalization (as IGPO), the other two components on."""
    return _estimator("a2tgpo-no-turn-norm", name="a2tgpo", turn_group_norm=False)


def a2tgpo_no_rescale() -> RunConfig:
    """Ablation: no division by sqrt(#terms)."""
    return _estimator("a2tgpo-no-rescale", name="a2tgpo", variance_rescale=False)


def a2tgpo_no_adaptive_clip() -> RunConfig:
    """Ablation: constant clip range."""
    return _estimator("a2tgpo-no-adaptive-clip", name="a2tgpo", adaptive_clip=False)


# The hard synthetic world (a2tgpo/envs/synthetic_hard.py): 1- to 4-hop questions,
# namesakes as distractors, eval questions about start entities training never asks about.
HARD_WORLD = [
    "env.world=hard",
    "env.num_entities=160",
    "env.max_hops=4",
    "env.eval_fraction=0.16",
    "rollout.max_turns=6",  # 4 searches + the answer, and one search to spare
    # ~1900 warm-start steps: the tiny model learns to copy names after ~1000 (EM 0 before)
    "warmstart.examples=4000",
    "warmstart.epochs=4",
    "eval.prompts=400",
    "tracking.experiment=a2tgpo-estimators-synthetic-hard",
]


def on_hard_world(base: Callable[[], RunConfig], name: str) -> RunConfig:
    """A preset moved onto the hard synthetic world, renamed `name`."""
    return apply_overrides(base(), [*HARD_WORLD, f"preset={name}"])


ESTIMATOR_PRESETS = (
    "grpo",
    "igpo",
    "a2tgpo",
    "a2tgpo-no-turn-norm",
    "a2tgpo-no-rescale",
    "a2tgpo-no-adaptive-clip",
)

PRESETS: dict[str, Callable[[], RunConfig]] = {
    "embedded": embedded,
    "embedded-overlap": embedded_overlap,
    "embedded-lora": embedded_lora,
    "grpo": grpo,
    "igpo": igpo,
    "a2tgpo": a2tgpo,
    "a2tgpo-no-turn-norm": a2tgpo_no_turn_norm,
    "a2tgpo-no-rescale": a2tgpo_no_rescale,
    "a2tgpo-no-adaptive-clip": a2tgpo_no_adaptive_clip,
    "search-qa-7b": search_qa_7b,
    "a2tgpo-qwen3-4b": a2tgpo_qwen3_4b,
    "search-qa-7b-lora": search_qa_7b_lora,
    "a2tgpo-qwen3-4b-lora": a2tgpo_qwen3_4b_lora,
}
# `hard` (the embedded run, A²TGPO) and `hard-<estimator>` for each estimator preset.
PRESETS["hard"] = functools.partial(on_hard_world, embedded, "hard")
for _name in ESTIMATOR_PRESETS:
    PRESETS[f"hard-{_name}"] = functools.partial(on_hard_world, PRESETS[_name], f"hard-{_name}")


def preset(name: str) -> RunConfig:
    """The config of a named preset."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def resolve_config(
    name: str = "embedded",
    overrides: Mapping[str, Any] | list[str] | None = None,
    config: RunConfig | Mapping[str, Any] | None = None,
) -> RunConfig:
    """The run's full config, in one order whatever the caller:

    1. the base: `config` itself when it is a `RunConfig` (the CLI and the sweep build
       the whole config first), else the preset `name`;
    2. a `config` mapping on top of the preset, section by section: a partial tree like
       a `--config` file (`{"rollout": {"group_size": 16}}`), never plain `RunConfig`
       defaults in place of the preset's;
    3. `overrides` last: `key.sub=value` strings, or a mapping of dotted keys (or of
       sections, merged the same way) to values.
    """
    if isinstance(config, RunConfig):
        base = config
    else:
        base = preset(name)
        if config:
            base = merge_config(base, config)
    if not overrides:
        return base
    if isinstance(overrides, Mapping):
        overrides = [
            f"{k}={v if isinstance(v, str) else json.dumps(v)}"
            for k, v in dotted(overrides).items()
        ]
    return apply_overrides(base, list(overrides))
