"""The training side of the config tree: the policy update, the warm-start, and how the
pipeline schedules its trainer (`a2tgpo.config.RunConfig` holds them as `train`,
`warmstart` and `pipeline`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from a2tgpo.config_rules import Section


class TrainConfig(Section):
    learning_rate: float = Field(1e-4, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    ppo_epochs: int = Field(1, ge=1, description="Passes over the iteration's batch.")
    mini_batches: int = Field(2, ge=1, description="Optimizer steps per epoch.")
    micro_batch_tokens: int = Field(
        4096, ge=64, description="Token budget of one micro-batch (padding-free packing)."
    )
    grad_clip: float = Field(1.0, gt=0, description="Gradient norm clip.")
    ratio_level: Literal["token", "turn"] = Field(
        "token", description="PPO ratio per token, or one ratio per turn (GSPO-style)."
    )
    loss_agg: Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"] = Field(
        "token-mean", description="How per-token losses are aggregated."
    )
    dual_clip: float | None = Field(3.0, description="Dual-clip constant c for A<0; None = off.")
    kl_coef: float = Field(0.0, ge=0, description="Low-variance KL to the reference policy.")
    entropy_coef: float = Field(0.0, ge=0, description="Entropy bonus coefficient.")
    zero_stage: Literal[0, 1, 2, 3] = Field(3, description="DeepSpeed ZeRO stage.")
    offload_params: bool = Field(False, description="ZeRO-3: offload parameters to CPU memory.")
    offload_optimizer: bool = Field(False, description="ZeRO: offload optimizer state to CPU.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward.")
    num_gpus: int = Field(
        0, ge=0, description="GPUs per node for the launcher (torchrun); 0 = train on CPU (gloo)."
    )
    cpu_processes: int = Field(
        1, ge=1, description="CPU training: data-parallel processes (ranks) when num_gpus is 0."
    )
    rollout_correction: Literal["none", "tis", "mis"] = Field(
        "none",
        description="Off-policy correction by w = pi_old / pi_rollout (trainer's old vs the "
        "engine's stored log-probs), per token or per turn as ratio_level says: tis multiplies "
        "the loss by min(w, cap), mis by w where w <= cap and drops the rest; none = off.",
    )
    correction_cap: float = Field(
        2.0, gt=1, description="The cap C of rollout_correction (TIS truncation, MIS mask)."
    )
    export_merged: bool = Field(
        False,
        description="With model.lora: also commit the merged policy (base + adapter) as an HF "
        "folder `hf/` beside `adapter/` in every checkpoint, for serving without LoRA support. "
        "Costs a full model's bytes per checkpoint. Without LoRA, `hf/` is always written.",
    )


class WarmstartConfig(Section):
    enabled: bool = Field(
        True, description="Supervised warm-start on synthetic demonstrations before RL."
    )
    examples: int = Field(1000, ge=1, description="Demonstrations to train on.")
    epochs: int = Field(3, ge=1, description="Passes over the demonstrations.")
    learning_rate: float = Field(3e-3, gt=0, description="Warm-start learning rate.")
    micro_batch_tokens: int = Field(
        2048, ge=64, description="Padded tokens per warm-start step (one step per micro-batch)."
    )


class PipelineConfig(Section):
    trainer: Literal["persistent", "subprocess"] = Field(
        "persistent",
        description="persistent: the ZeRO-3 ranks start once per flow run and keep the model "
        "and optimizer state in memory across train steps (each step still commits its "
        "checkpoint); subprocess: new worker processes per train step.",
    )
    overlap: bool = Field(
        False,
        description="Roll out iteration k+1 with policy k-1 while policy k trains (one step "
        "stale at most; the staleness is recorded per trajectory). Pair it with "
        "train.rollout_correction.",
    )
    release_trainer_memory: bool = Field(
        False,
        description="GPUs, persistent trainer: offload the ZeRO-3 model and optimizer states "
        "to CPU memory between train steps (DeepSpeed offload_states), freeing the device "
        "for rollout; a no-op on CPU.",
    )
    step_timeout_s: float = Field(
        7200.0,
        gt=0,
        description="Longest a train step may run (either trainer); past it the workers are "
        "killed and the step fails, uncommitted.",
    )
