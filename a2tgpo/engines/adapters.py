"""LoRA adapter folders, as peft writes them, and policies made of a base + an adapter.

An adapter folder holds `adapter_config.json` (peft's LoraConfig; its
`base_model_name_or_path` is where the frozen base policy lives: a checkpoint URI of the
run, a local folder or a hub id) and `adapter_model.safetensors`. Engines that run the
policy in this process (the HF engine, the naive and packed IG scorers) merge the adapter
into the base weights once when they load it (`load_causal_lm`): W + (alpha / r) B A,
exactly the function the trainer computes. vLLM serves base + adapter without merging
(`VLLMEngine.set_adapter`).

peft is imported lazily: nothing here is needed by a run without LoRA.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from a2tgpo.errors import InputError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class AdapterError(InputError):
    """An adapter folder or LoRA setting that cannot be used with this policy."""


def read_adapter_config(adapter_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """peft's adapter config of `adapter_dir`, checked to be a LoRA adapter we can load."""
    path = Path(adapter_dir) / ADAPTER_CONFIG
    if not path.is_file():
        raise AdapterError(f"{adapter_dir} is not a LoRA adapter folder: no {ADAPTER_CONFIG}")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise AdapterError(f"{path} is not JSON: {error}") from None
    if config.get("peft_type") != "LORA":
        raise AdapterError(f"{path}: peft_type {config.get('peft_type')!r}, expected 'LORA'")
    if not (Path(adapter_dir) / ADAPTER_WEIGHTS).is_file():
        raise AdapterError(f"{adapter_dir} has no {ADAPTER_WEIGHTS} (pickled .bin is refused)")
    return config


def adapter_base(adapter_dir: str | os.PathLike[str]) -> str:
    """Where the adapter's frozen base policy lives (`base_model_name_or_path`)."""
    base = read_adapter_config(adapter_dir).get("base_model_name_or_path")
    if not base:
        raise AdapterError(f"{adapter_dir}/{ADAPTER_CONFIG} names no base model")
    return str(base)


def linear_module_names(model) -> set[str]:
    """The last name component of every linear layer of `model` (what target_modules name)."""
    import torch

    return {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name
    }


def check_target_modules(model, target_modules: list[str]) -> None:
    """AdapterError naming each target the model lacks (peft fails only when none match)."""
    present = linear_module_names(model)
    missing = sorted(set(target_modules) - present)
    if missing:
        raise AdapterError(
            f"model.lora.target_modules {missing} are not linear layers of this model; "
            f"its linear layers are {sorted(present)}"
        )


def check_model_targets(model_dir: str | os.PathLike[str], target_modules: list[str]) -> None:
    """`check_target_modules` on the model of `model_dir`, built from its config alone on
    the meta device (no weights are read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(model_dir)))
    check_target_modules(model, target_modules)


def merge_adapter(model, adapter_dir: str | os.PathLike[str]):
    """`model` (a transformers causal LM) with the adapter's update merged into its weights."""
    from peft import PeftModel

    targets = read_adapter_config(adapter_dir).get("target_modules")
    if isinstance(targets, list):  # a string is peft's regular expression: peft checks it
        check_target_modules(model, targets)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    return merged.eval()


def load_causal_lm(
    model_dir: str | os.PathLike[str],
    adapter_dir: str | os.PathLike[str] | None = None,
    **kwargs: Any,
):
    """The HF causal LM of `model_dir`, with `adapter_dir` merged in when given (kwargs go
    to `from_pretrained`: dtype, attn_implementation)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    return merge_adapter(model, adapter_dir) if adapter_dir else model


def save_merged(
    model_dir: str | os.PathLike[str], adapter_dir: str | os.PathLike[str], out_dir: Path
) -> Path:
    """Write the base + adapter policy, merged, as an HF folder with the base's tokenizer."""
    from transformers import AutoTokenizer

    load_causal_lm(model_dir, adapter_dir).save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(out_dir)
    return out_dir
