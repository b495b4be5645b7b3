"""Engine settings from the run config: one rule for every stage that starts an engine.

Also the rule tying the trainer to the engine's log-probs (`rollout.logprobs`): which
temperature the trainer divides its logits by, and the warning a run logs at start
when the distribution tokens are sampled from is not the one the trainer computes.
"""

from __future__ import annotations

from typing import Any

from a2tgpo.config import RolloutConfig, RunConfig


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
        "logprobs_mode": config.rollout.logprobs,
        # LoRA adapter slots (vLLM); 0 = the policy is served as plain weights
        "max_lora_rank": config.model.lora.rank,
    }


def trainer_temperature(rollout: RolloutConfig) -> float:
    """What the trainer divides its logits by, for old, new and reference log-probs.

    "sampled": the rollout temperature, as verl does, so the PPO ratio is between the
    tempered distributions tokens were drawn from. Greedy rollouts (temperature 0) have
    raw log-probs in the engines, hence 1. "raw": 1.
    """
    if rollout.logprobs == "sampled" and rollout.temperature > 0:
        return rollout.temperature
    return 1.0


def _cuts(rollout: RolloutConfig) -> list[str]:
    cuts = [f"top_p={rollout.top_p:g}"] if rollout.top_p < 1 else []
    return cuts + ([f"top_k={rollout.top_k}"] if rollout.top_k > 0 else [])


def logprob_mismatch_warning(config: RunConfig) -> str | None:
    """A warning when tokens are sampled from another distribution than the trainer's.

    None when the trainer's distribution is the one sampled (temperature 1, or
    `logprobs=sampled` at any temperature, without top-k/top-p). Otherwise says what
    `mismatch/*/turn_k` (stored rollout log-probs vs the trainer's) then compares.
    """
    r = config.rollout
    if r.temperature == 0:
        return (
            "rollout.temperature=0: rollouts are greedy; the stored rollout log-probs and the "
            "trainer's are the untempered model's, so the PPO ratio and mismatch/*/turn_k "
            "refer to a distribution the tokens were not sampled from."
        )
    cuts = _cuts(r)
    if r.logprobs == "raw" and (r.temperature != 1 or cuts):
        sampled = ", ".join([f"temperature={r.temperature:g}", *cuts])
        return (
            f"rollout.logprobs=raw with {sampled}: tokens are sampled from the tempered/cut "
            "distribution, but the stored rollout log-probs and the trainer's PPO ratio use "
            "the untempered model, log_softmax(logits). mismatch/*/turn_k compares engine and "
            "trainer on that raw distribution, not on the one sampled. Set "
            "rollout.logprobs=sampled to train on the sampled (tempered) distribution."
        )
    if r.logprobs == "sampled" and cuts:
        return (
            f"rollout.logprobs=sampled with {', '.join(cuts)}: the stored rollout log-probs "
            "are of the cut distribution (renormalized over the kept tokens), which the "
            f"trainer cannot reproduce (it divides by temperature={trainer_temperature(r):g} "
            "only). mismatch/*/turn_k compares different distributions: the trainer's "
            "log-probs are lower by the log of the kept mass, and that gap is not an "
            "engine/trainer numerics error."
        )
    return None
