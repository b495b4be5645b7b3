"""`make_engine`: the named engine over a model folder (kept apart from the interface in
`base.py`, which every engine imports, so that no import cycle runs through it)."""

from __future__ import annotations

import os
from typing import Any, Literal

from a2tgpo.engines.base import Engine, resolve_dtype


def make_engine(
    kind: Literal["vllm", "hf"],
    model_dir: str | os.PathLike[str],
    *,
    dtype: str = "auto",
    max_model_len: int = 2048,
    seed: int = 0,
    kv_cache_gib: float = 1.0,
    tensor_parallel_size: int = 1,
    **kwargs: Any,
) -> Engine:
    """Load `model_dir` in the named engine. Extra kwargs go to the engine's constructor.

    kv_cache_gib and tensor_parallel_size only matter to vLLM. The vLLM engine
    starts a child process: call this under `if __name__ == "__main__":` in scripts.
    """
    dtype = resolve_dtype(dtype)
    if kind == "vllm":
        from a2tgpo.engines.vllm_engine import VLLMEngine

        return VLLMEngine(
            model_dir,
            dtype=dtype,
            max_model_len=max_model_len,
            seed=seed,
            kv_cache_gib=kv_cache_gib,
            tensor_parallel_size=tensor_parallel_size,
            **kwargs,
        )
    if kind == "hf":
        from a2tgpo.engines.hf_engine import HFEngine

        return HFEngine(model_dir, dtype=dtype, max_model_len=max_model_len, seed=seed, **kwargs)
    raise ValueError(f"unknown engine kind {kind!r} (expected 'vllm' or 'hf')")
