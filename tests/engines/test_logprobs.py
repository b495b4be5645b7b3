"""Log-prob agreement: vLLM vs HF teacher forcing, and generation vs teacher forcing.

Both engines return unscaled model log-probs (log_softmax of raw logits), whatever
the sampling temperature / top-p, so they must equal a plain forward's log-probs.
"""

from __future__ import annotations

import numpy as np
import pytest

from a2tgpo.engines import SamplingSpec


def _sequences(chat_prompts: list[list[int]], hf_engine) -> tuple[list[list[int]], list[int]]:
    """Prompt + sampled continuation, of different lengths, with assorted starts."""
    outs = hf_engine.generate(
        chat_prompts, [SamplingSpec(max_tokens=8 + 20 * i, seed=i) for i in range(3)]
    )
    seqs = [p + o.token_ids for p, o in zip(chat_prompts, outs, strict=True)]
    return seqs, [1, len(chat_prompts[1]), len(seqs[2])]


def test_hf_generation_matches_teacher_forcing(hf_engine, chat_prompts) -> None:
    spec = SamplingSpec(max_tokens=40, temperature=0.7, top_p=0.9, seed=5)
    outs = hf_engine.generate(chat_prompts, spec)
    seqs = [p + o.token_ids for p, o in zip(chat_prompts, outs, strict=True)]
    forced = hf_engine.prompt_logprobs(seqs, [len(p) for p in chat_prompts])
    for o, f in zip(outs, forced, strict=True):
        np.testing.assert_allclose(o.logprobs, f, atol=1e-4)


@pytest.mark.slow
def test_vllm_prompt_logprobs_match_hf(vllm_engine, hf_engine, chat_prompts) -> None:
    seqs, starts = _sequences(chat_prompts, hf_engine)
    got = vllm_engine.prompt_logprobs(seqs, starts)
    want = hf_engine.prompt_logprobs(seqs, starts)
    for seq, start, g, w in zip(seqs, starts, got, want, strict=True):
        assert g.dtype == np.float64 and g.shape == (len(seq) - start,)
        np.testing.assert_allclose(g, w, atol=1e-4)
    assert got[2].size == 0


@pytest.mark.slow
@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.6, 0.8)])
def test_vllm_sampled_logprobs_are_raw_model_logprobs(
    vllm_engine, hf_engine, chat_prompts, temperature: float, top_p: float
) -> None:
    specs = [
        SamplingSpec(max_tokens=48, temperature=temperature, top_p=top_p, seed=i) for i in range(6)
    ]
    prompts = chat_prompts * 2
    outs = vllm_engine.generate(prompts, specs)
    seqs = [p + o.token_ids for p, o in zip(prompts, outs, strict=True)]
    forced = hf_engine.prompt_logprobs(seqs, [len(p) for p in prompts])
    for o, f in zip(outs, forced, strict=True):
        np.testing.assert_allclose(o.logprobs, f, atol=1e-3)
