"""In-place weight hand-off into the running vLLM engine: from a checkpoint folder
(`reload_weights`) and streamed in layer-aligned buckets (`load_weights`). After either,
the engine's teacher-forced log-probs equal HF's for the new weights (the tied LM head
included), and nothing of the old policy is left in its prefix cache.

The engine is the session's shared one: every test puts the original weights back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from a2tgpo.engines import make_engine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def policy_b(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with every weight perturbed (embeddings, hence the tied head, too)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert model.config.tie_word_embeddings
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    out = tmp_path_factory.mktemp("policy-b") / "hf"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def teacher_forced(engine, prompts: list[list[int]]) -> list[np.ndarray]:
    return engine.prompt_logprobs(prompts, [1] * len(prompts))


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path, policy_b: Path, chat_prompts):
    """HF's log-probs of the chat prompts under the original weights and under B."""
    out = {}
    for name, folder in (("a", tiny_model_dir), ("b", policy_b)):
        with make_engine("hf", folder, dtype="float32", max_model_len=512) as hf:
            out[name] = teacher_forced(hf, chat_prompts)
    return out


def assert_matches(engine, prompts, expected: list[np.ndarray]) -> None:
    for got, want in zip(teacher_forced(engine, prompts), expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_reload_from_folder_and_back(
    vllm_engine, tiny_model_dir, policy_b, chat_prompts, reference
):
    assert not np.allclose(reference["a"][0], reference["b"][0], atol=1e-2)
    assert_matches(vllm_engine, chat_prompts, reference["a"])  # caches the prompts' blocks
    try:
        vllm_engine.reload_weights(policy_b)
        assert vllm_engine.model_dir == str(policy_b)
        assert_matches(vllm_engine, chat_prompts, reference["b"])
    finally:
        vllm_engine.reload_weights(tiny_model_dir)
    assert_matches(vllm_engine, chat_prompts, reference["a"])


def test_streamed_buckets(vllm_engine, tiny_model_dir, policy_b, chat_prompts, reference):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(policy_b, dtype=torch.float32)
    named = [(n, p.detach()) for n, p in model.named_parameters()]  # tied head: once
    try:
        # a small budget: many buckets, each cut between layers
        buckets = vllm_engine.load_weights(iter(named), bucket_bytes=64 << 10)
        assert buckets > 2
        assert_matches(vllm_engine, chat_prompts, reference["b"])
    finally:
        vllm_engine.reload_weights(tiny_model_dir)
    assert_matches(vllm_engine, chat_prompts, reference["a"])
