"""Fixtures of the scoring suite: the session's tiny model loaded in-process.

The model folder (`tiny_model_dir`), its `tokenizer` and the session's one vLLM engine
(`vllm_engine`, max_model_len 512) come from tests/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def hf_model(tiny_model_dir: Path):
    """The tiny policy as an HF causal LM: fp32, SDPA attention, eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa"
    )
    return model.eval()
