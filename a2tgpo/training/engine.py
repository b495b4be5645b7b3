"""DeepSpeed set-up: process group, ZeRO config, the engine around an HF policy.

One code path for one CPU process (DS_ACCELERATOR=cpu, gloo; fp32) and for GPUs
under the `deepspeed` / `torchrun` launcher (nccl; bf16). The optimizer is a plain
torch AdamW handed to DeepSpeed (`zero_allow_untested_optimizer`), which needs no
op compilation. Gradient accumulation is driven by the caller through explicit
boundaries, because token-budget micro-batches vary in number per mini-batch.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

from a2tgpo.config import TrainConfig
from a2tgpo.config_lora import LoraConfig
from a2tgpo.engines.base import torch_dtype
from a2tgpo.training.lora import attach_adapter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdapterPlan:
    """Train LoRA adapters: new ones (`adapter_dir` None) or a checkpoint's."""

    lora: LoraConfig
    adapter_dir: str | None
    seed: int


def on_gpu() -> bool:
    return os.environ.get("DS_ACCELERATOR", "") != "cpu" and torch.cuda.is_available()


def init_distributed() -> tuple[int, int]:
    """Join (or create) the process group; returns (rank, world size)."""
    import deepspeed

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    if on_gpu():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu() else "gloo")
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def train_dtype(config_dtype: str) -> torch.dtype:
    """ModelConfig.dtype for the trainer: 'auto' follows where training runs (on_gpu)."""
    return torch_dtype(config_dtype, on_gpu=on_gpu())


def deepspeed_config(train: TrainConfig, dtype: torch.dtype) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": train.zero_stage}
    if train.zero_stage == 3 and train.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": on_gpu()}
    if train.offload_optimizer and train.zero_stage > 0:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu()}
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,  # boundaries are set explicitly per mini-batch
        "gradient_clipping": train.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": dtype == torch.bfloat16},
        "fp16": {"enabled": dtype == torch.float16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def load_policy(policy_dir: str, dtype: torch.dtype, gradient_checkpointing: bool = False):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        policy_dir, dtype=dtype, attn_implementation="sdpa"
    )
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.config.use_cache = False
    return model


def build_engine(
    policy_dir: str, train: TrainConfig, dtype: torch.dtype, adapters: AdapterPlan | None = None
):
    """A DeepSpeed engine training the HF policy in `policy_dir` with AdamW: every weight,
    or, with `adapters`, LoRA adapters on it (the weights frozen, AdamW over the adapters)."""
    import deepspeed

    model = load_policy(policy_dir, dtype, train.gradient_checkpointing)
    if adapters is not None:
        model = attach_adapter(model, adapters.lora, adapters.adapter_dir, adapters.seed)
        if train.gradient_checkpointing:  # frozen embeddings: checkpointed blocks need a grad input
            model.enable_input_require_grads()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=train.learning_rate, weight_decay=train.weight_decay, eps=1e-8
    )
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=deepspeed_config(train, dtype)
    )
    return engine


def offload_engine_states(engine, pin_memory: bool = True) -> None:
    """Move a ZeRO-3 engine's states (fp32 master partitions, Adam moments, bf16 partitions,
    gradient buffers) to CPU memory until `engine.reload_states()`.

    DeepSpeed's `offload_states` refuses any optimizer but its FusedAdam (a CUDA op this
    project does not compile) for the first two, although torch's AdamW keeps the same
    state layout (`exp_avg`, `exp_avg_sq`); so those two are moved here, with DeepSpeed's
    own helper, and registered so that DeepSpeed's `reload_states` brings them back."""
    from deepspeed.runtime.zero.offload_config import OffloadStateTypeEnum as State
    from deepspeed.runtime.zero.offload_states import offload_adam_states

    zero = engine.optimizer
    rest = [State.lp_params, State.lp_grads, State.contiguous_grad_buffer]
    zero.offload_states(include=rest, pin_memory=pin_memory)
    for flat in zero.fp32_partitioned_groups_flat:
        flat.data = flat.data.to("cpu")
    zero.offloaded_states.add(State.hp_params)
    offload_adam_states(zero.optimizer, "cpu", pin_memory=pin_memory)
    zero.offloaded_states.add(State.optim_states)
    if on_gpu():
        torch.cuda.empty_cache()
