"""The LoRA section of the config tree (`model.lora`): train low-rank adapters on a
frozen base policy instead of every weight (`a2tgpo.training.lora`, built on peft).

Off by default (`rank: 0`). The defaults fit Qwen2 / Qwen2.5 / Qwen3 and Llama-style
models: every linear layer of attention and MLP, alpha = 2 x rank, no dropout.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from a2tgpo.config_rules import Section

# Every linear projection of a Qwen2/Qwen3 (and Llama, Mistral) decoder layer.
QWEN_LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# vLLM sizes its LoRA slots by one of these (vllm.config.lora.MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class LoraConfig(Section):
    rank: int = Field(
        0,
        ge=0,
        le=VLLM_LORA_RANKS[-1],
        description="LoRA rank r; 0 = off (every weight trains). With r > 0 the RL steps "
        "train only the adapters, the base policy stays frozen (ZeRO-3 still partitions it).",
    )
    alpha: float | None = Field(
        None,
        gt=0,
        description="LoRA alpha: the update is scaled by alpha / rank. None = 2 x rank.",
    )
    dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Dropout on the adapters' input while training. 0 keeps the PPO ratio "
        "exactly 1 on the first pass (the old log-probs are taken without dropout).",
    )
    target_modules: list[str] = Field(
        default_factory=lambda: list(QWEN_LINEAR_MODULES),
        min_length=1,
        description="Names (last component) of the linear layers that get adapters; the "
        "default is every attention and MLP projection of Qwen2/Qwen3 and Llama models.",
    )
    init_seed: int | None = Field(
        None, description="Seed of the adapters' random A matrices; None = the run's seed."
    )

    @field_validator("target_modules")
    @classmethod
    def _plain_names(cls, names: list[str]) -> list[str]:
        bad = [n for n in names if not n or not n.replace("_", "").replace(".", "").isalnum()]
        if bad:
            raise ValueError(
                f"target_modules must be module names such as 'q_proj'; got {bad} "
                "(regular expressions are not accepted)"
            )
        return names

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    @property
    def scaling_alpha(self) -> float:
        """alpha, with the default 2 x rank resolved."""
        return self.alpha if self.alpha is not None else 2.0 * self.rank


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest LoRA slot size vLLM accepts that holds `rank` (0 = LoRA off)."""
    if rank <= 0:
        return 0
    return next(r for r in VLLM_LORA_RANKS if r >= rank)
