"""LoRA in the trainer: adapters on a frozen base policy (`model.lora`, built on peft).

The engine trains a peft model: the base weights have requires_grad False, so AdamW holds
state for the adapters only, while ZeRO-3 still partitions every weight, frozen ones
included. A step commits the adapter as peft writes it (`adapter/`: adapter_config.json
naming the base policy's URI, and adapter_model.safetensors), gathered one tensor at a
time like the full export, and, with `train.export_merged`, the merged HF folder `hf/`:
W + (alpha / r) B A for every adapted layer, streamed one weight at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch

from a2tgpo.config_lora import LoraConfig
from a2tgpo.engines.adapters import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    AdapterError,
    check_target_modules,
    read_adapter_config,
)
from a2tgpo.training.export import iter_full_parameters

PEFT_PREFIX = "base_model.model."  # peft's prefix before the wrapped model's own names
BASE_LAYER = ".base_layer"  # peft's name of an adapted layer's original module
ADAPTER_NAME = "default"


def peft_lora_config(lora: LoraConfig, base: str | None = None):
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(
        r=lora.rank,
        lora_alpha=lora.scaling_alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=base,
    )


def attach_adapter(model, lora: LoraConfig, adapter_dir: str | None, seed: int):
    """A peft model training adapters on the frozen `model`: loaded from `adapter_dir`
    (a checkpoint's, to train on), else new (A random from `seed`, B zero: the policy
    starts equal to the base)."""
    from peft import PeftModel, get_peft_model

    check_target_modules(model, lora.target_modules)
    if adapter_dir:
        check_adapter_fits(adapter_dir, lora)
        return PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)
    with torch.random.fork_rng(devices=[]):  # every rank draws the same A
        torch.manual_seed(seed)
        return get_peft_model(model, peft_lora_config(lora))


def check_adapter_fits(adapter_dir: str | Path, lora: LoraConfig) -> None:
    """AdapterError when a checkpoint's adapter was trained with other LoRA settings."""
    saved = read_adapter_config(adapter_dir)
    ours = {
        "r": lora.rank,
        "lora_alpha": lora.scaling_alpha,
        "target_modules": sorted(lora.target_modules),
    }
    theirs = {
        "r": saved.get("r"),
        "lora_alpha": saved.get("lora_alpha"),
        "target_modules": sorted(saved.get("target_modules") or []),
    }
    differ = {k: (theirs[k], ours[k]) for k in ours if theirs[k] != ours[k]}
    if differ:
        shown = ", ".join(f"{k}: adapter {a!r} vs config {b!r}" for k, (a, b) in differ.items())
        raise AdapterError(
            f"the adapter in {adapter_dir} does not fit model.lora ({shown}); resume with "
            "the LoRA settings the checkpoint was trained with"
        )


def count_parameters(module: torch.nn.Module) -> dict[str, int]:
    """Trainable and total parameter counts (ZeRO-3 partitioned ones by their full size)."""
    trainable = total = 0
    for param in module.parameters():
        n = param.ds_numel if hasattr(param, "ds_numel") else param.numel()
        total += n
        trainable += n if param.requires_grad else 0
    return {"trainable": trainable, "total": total}


def export_adapter(module, out_dir: Path, base_uri: str, *, write: bool) -> None:
    """Write the adapter of the peft `module` as peft's folder (all ranks call: gathering
    is collective under ZeRO-3; only `write=True` writes)."""
    from safetensors.torch import save_file

    tensors = dict(iter_full_parameters(module, torch.float32, trainable=True))
    if not write:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = {peft_name(name): t.contiguous() for name, t in tensors.items()}
    save_file(saved, out_dir / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    config = module.peft_config[ADAPTER_NAME].to_dict()
    config["base_model_name_or_path"] = base_uri
    config["target_modules"] = sorted(config["target_modules"])  # peft keeps a set
    (out_dir / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, default=str))


def peft_name(name: str) -> str:
    """peft's file name of an adapter tensor: the adapter name dropped
    (`...q_proj.lora_A.default.weight` -> `...q_proj.lora_A.weight`)."""
    return name.replace(f".{ADAPTER_NAME}.", ".")


def iter_merged_parameters(module, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, merged tensor) of the peft `module`'s policy, one weight at a time
    (collective under ZeRO-3): each adapted weight W becomes W + (alpha / r) B A."""
    config = module.peft_config[ADAPTER_NAME]
    if getattr(config, "use_rslora", False):
        raise AdapterError("merging rsLoRA adapters is not supported")
    scaling = config.lora_alpha / config.r
    lora = dict(iter_full_parameters(module, torch.float32, trainable=True))
    for name, tensor in iter_full_parameters(module, torch.float32, trainable=False):
        hf_name = name.removeprefix(PEFT_PREFIX).replace(BASE_LAYER, "")
        if name.endswith(f"{BASE_LAYER}.weight"):
            layer = name[: -len(f"{BASE_LAYER}.weight")]
            a = lora[f"{layer}.lora_A.{ADAPTER_NAME}.weight"]
            b = lora[f"{layer}.lora_B.{ADAPTER_NAME}.weight"]
            tensor = tensor + scaling * (b @ a)
        yield hf_name, tensor.to(dtype)
