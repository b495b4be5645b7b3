"""Engine settings from the run config: one rule for every stage that starts an engine."""

from __future__ import annotations

from typing import Any

from a2tgpo.config import RunConfig


def engine_options(config: RunConfig) -> dict[str, Any]:
    """Keyword arguments of `make_engine` from the config.

    The context holds the whole trajectory budget plus one more turn: the engine is
    asked for a turn while the trajectory is still inside its budget.
    """
    return {
        "dtype": config.model.dtype,
        "max_model_len": config.rollout.max_total_tokens + config.rollout.max_turn_tokens,
        "seed": config.seed,
        "kv_cache_gib": config.rollout.kv_cache_gib,
        "tensor_parallel_size": config.rollout.tensor_parallel_size,
    }
