"""The LoRA adapter a vLLM engine serves on its base weights (vLLM's multi-LoRA support,
used with one slot: the policy's adapter).

A new adapter is loaded into the running engine under a new id (`add_lora`), and the
previous one removed: no restart, and the base weights stay as they are. Every request
carries the current `LoRARequest`; vLLM keys prefix-cache blocks by the adapter, so
blocks computed under an older adapter are never reused. vLLM 0.32's CPU build runs
LoRA through its PunicaWrapperCPU (checked by tests/engines/test_lora_engines.py).
"""

from __future__ import annotations

from typing import Any

from a2tgpo.config_lora import vllm_max_lora_rank
from a2tgpo.engines.adapters import AdapterError, read_adapter_config


def lora_engine_kwargs(max_lora_rank: int) -> dict[str, Any]:
    """`LLM` arguments serving one adapter of rank up to `max_lora_rank` (0: none)."""
    if max_lora_rank <= 0:
        return {}
    return {"enable_lora": True, "max_loras": 1, "max_lora_rank": vllm_max_lora_rank(max_lora_rank)}


class AdapterSlot:
    def __init__(self, max_rank: int) -> None:
        self.max_rank = vllm_max_lora_rank(max_rank)
        self.request: Any = None  # the LoRARequest of the adapter served, or None
        self.serial = 0

    def switch(self, llm: Any, adapter_dir: str | None) -> None:
        """Serve `adapter_dir` (None: the base alone) in the running `llm`."""
        from vllm.lora.request import LoRARequest

        if adapter_dir is not None:
            self.check(adapter_dir)
        previous, self.request = self.request, None
        if adapter_dir is not None:
            self.serial += 1
            request = LoRARequest(f"a2tgpo-{self.serial}", self.serial, adapter_dir)
            llm.llm_engine.add_lora(request)  # loaded now: a bad adapter fails here
            self.request = request
        if previous is not None:
            llm.llm_engine.remove_lora(previous.lora_int_id)

    def check(self, adapter_dir: str) -> None:
        rank = int(read_adapter_config(adapter_dir).get("r") or 0)
        if not self.max_rank:
            raise AdapterError(
                f"{adapter_dir} is a LoRA adapter, but this vLLM engine was started "
                "without LoRA (set model.lora to the policy's settings)"
            )
        if rank > self.max_rank:
            raise AdapterError(
                f"{adapter_dir} has rank {rank}, above the engine's max_lora_rank {self.max_rank}"
            )
