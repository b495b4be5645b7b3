"""Log-prob agreement: vLLM vs HF teacher forcing, and generation vs teacher forcing.

logprobs_mode "raw": both engines return log_softmax of the raw logits, whatever the
sampling temperature / top-k / top-p, so they equal a plain forward's log-probs.
"sampled": they return the log-probs of the distribution sampled, log_softmax(logits
/ T) renormalized over the top-k / top-p cut, so they equal a forward's tempered
log-probs (with the same cut applied), and the raw ones at T = 1 or greedy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from a2tgpo.engines import SamplingSpec, make_engine
from tests.conftest import MAX_MODEL_LEN


def _sequences(chat_prompts: list[list[int]], hf_engine) -> tuple[list[list[int]], list[int]]:
    """Prompt + sampled continuation, of different lengths, with assorted starts."""
    outs = hf_engine.generate(
        chat_prompts, [SamplingSpec(max_tokens=8 + 20 * i, seed=i) for i in range(3)]
    )
    seqs = [p + o.token_ids for p, o in zip(chat_prompts, outs, strict=True)]
    return seqs, [1, len(chat_prompts[1]), len(seqs[2])]


def forced_logprobs(
    hf_engine, prompt: list[int], tokens: list[int], temperature: float, top_k: int = 0
) -> np.ndarray:
    """Teacher-forced log-probs of `tokens` under softmax(logits / T), top-k cut (0 = off)."""
    ids = torch.tensor([prompt + tokens])
    with torch.inference_mode():
        logits = hf_engine.model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
    logits = logits / temperature
    if top_k:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    logp = torch.log_softmax(logits, dim=-1)
    return logp.gather(-1, torch.tensor(tokens).unsqueeze(-1)).squeeze(-1).double().numpy()


def check_against_forward(engine, hf_engine, chat_prompts, spec_kw: dict, atol: float) -> None:
    """Generate with `spec_kw`; compare with the forward's tempered, cut log-probs."""
    prompts = chat_prompts * 2
    specs = [SamplingSpec(max_tokens=40, seed=i, **spec_kw) for i in range(len(prompts))]
    temperature, top_k = spec_kw.get("temperature", 1.0) or 1.0, spec_kw.get("top_k", 0)
    for p, out in zip(prompts, engine.generate(prompts, specs), strict=True):
        want = forced_logprobs(hf_engine, p, out.token_ids, temperature, top_k)
        np.testing.assert_allclose(out.logprobs, want, atol=atol)


def test_hf_generation_matches_teacher_forcing(hf_engine, chat_prompts) -> None:
    spec = SamplingSpec(max_tokens=40, temperature=0.7, top_p=0.9, top_k=20, seed=5)
    outs = hf_engine.generate(chat_prompts, spec)
    seqs = [p + o.token_ids for p, o in zip(chat_prompts, outs, strict=True)]
    forced = hf_engine.prompt_logprobs(seqs, [len(p) for p in chat_prompts])
    for o, f in zip(outs, forced, strict=True):
        np.testing.assert_allclose(o.logprobs, f, atol=1e-4)  # raw mode: untempered


@pytest.fixture(scope="module")
def hf_sampled(tiny_model_dir):
    with make_engine(
        "hf", tiny_model_dir, dtype="float32", max_model_len=MAX_MODEL_LEN, logprobs_mode="sampled"
    ) as engine:
        yield engine


@pytest.mark.parametrize(
    "spec_kw",
    [{"temperature": 0.7}, {"temperature": 1.0}, {"temperature": 0.0}, {"temperature": 1.3, "top_k": 5}],
)  # fmt: skip
def test_hf_sampled_logprobs_are_of_the_sampled_distribution(
    hf_sampled, hf_engine, chat_prompts, spec_kw
) -> None:
    check_against_forward(hf_sampled, hf_engine, chat_prompts, spec_kw, atol=1e-4)


def test_hf_modes_agree_at_temperature_one(hf_sampled, hf_engine, chat_prompts) -> None:
    spec = SamplingSpec(max_tokens=40, seed=2)
    raw, sampled = hf_engine.generate(chat_prompts, spec), hf_sampled.generate(chat_prompts, spec)
    for r, s in zip(raw, sampled, strict=True):
        assert r.token_ids == s.token_ids and r.logprobs == s.logprobs  # bit for bit


def test_hf_modes_sample_the_same_tokens(hf_sampled, hf_engine, chat_prompts) -> None:
    spec = SamplingSpec(max_tokens=40, temperature=0.7, top_p=0.8, seed=3)
    raw, sampled = hf_engine.generate(chat_prompts, spec), hf_sampled.generate(chat_prompts, spec)
    gaps = []
    for p, r, s in zip(chat_prompts, raw, sampled, strict=True):
        assert r.token_ids == s.token_ids  # the mode changes what is reported, not what is drawn
        tempered = forced_logprobs(hf_engine, p, s.token_ids, 0.7)
        gaps.extend(np.asarray(s.logprobs) - tempered)
    # The nucleus renormalizes over the kept mass (<= 1): never less likely, at times more.
    assert min(gaps) > -1e-5 and max(gaps) > 1e-3


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


@pytest.fixture(scope="module")
def vllm_sampled(tiny_model_dir):
    engine = make_engine(
        "vllm",
        tiny_model_dir,
        dtype="float32",
        max_model_len=MAX_MODEL_LEN,
        kv_cache_gib=0.5,
        logprobs_mode="sampled",
    )
    try:
        yield engine
    finally:
        engine.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    "spec_kw",
    [{"temperature": 0.7}, {"temperature": 0.0}, {"temperature": 1.3, "top_k": 5}],
)  # fmt: skip
def test_vllm_sampled_logprobs_are_of_the_sampled_distribution(
    vllm_sampled, hf_engine, chat_prompts, spec_kw
) -> None:
    check_against_forward(vllm_sampled, hf_engine, chat_prompts, spec_kw, atol=1e-3)


@pytest.mark.slow
def test_vllm_modes_agree_at_temperature_one(vllm_sampled, vllm_engine, chat_prompts) -> None:
    # Why "sampled" could become the default without moving the presets' runs (all at
    # temperature 1, no top-k/top-p): same tokens, same log-probs, bit for bit.
    specs = [SamplingSpec(max_tokens=40, seed=i) for i in range(len(chat_prompts))]
    raw, sampled = (
        vllm_engine.generate(chat_prompts, specs),
        vllm_sampled.generate(chat_prompts, specs),
    )
    for r, s in zip(raw, sampled, strict=True):
        assert r.token_ids == s.token_ids and r.logprobs == s.logprobs
