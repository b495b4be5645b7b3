"""The trainer's log-probs use the rollout temperature (no DeepSpeed: fast).

With `rollout.logprobs=sampled` the engine stores log-probs of softmax(logits / T)
and the trainer divides its logits by T, so the mismatch statistic is ~0; dividing
by 1 instead (the old behaviour) leaves a gap the statistic would report.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from a2tgpo.config import RolloutConfig
from a2tgpo.engines import SamplingSpec, make_engine
from a2tgpo.engines.options import trainer_temperature
from a2tgpo.training.batching import Sample, make_micro_batch
from a2tgpo.training.update import frozen_logprobs, token_logprobs
from a2tgpo.training.worker import mismatch_stats


@pytest.fixture(scope="module")
def sampled_rollouts(tiny_model_dir, chat_prompts):
    rollout = RolloutConfig(temperature=0.7)
    with make_engine(
        "hf", tiny_model_dir, dtype="float32", max_model_len=512, logprobs_mode=rollout.logprobs
    ) as engine:
        specs = [SamplingSpec(max_tokens=24, temperature=0.7, seed=i) for i in range(3)]
        outs = engine.generate(chat_prompts, specs)
        samples = [
            _sample(i, p, o) for i, (p, o) in enumerate(zip(chat_prompts, outs, strict=True))
        ]
        yield engine.model, make_micro_batch(samples), trainer_temperature(rollout)


def _sample(index: int, prompt: list[int], out) -> Sample:
    n, k = len(prompt) + len(out.token_ids), len(prompt)
    mask = np.arange(n) >= k
    zeros = np.zeros(n, np.float32)
    return Sample(
        index=index,
        tokens=np.asarray(prompt + out.token_ids, np.int64),
        mask=mask,
        advantage=zeros,
        eps_low=zeros + 0.2,
        eps_high=zeros + 0.2,
        turn_ids=np.where(mask, 0, -1),
        rollout_logprobs=np.concatenate([zeros[:k], np.asarray(out.logprobs, np.float32)]),
    )


def test_tempered_trainer_logprobs_match_the_sampled_rollout(sampled_rollouts) -> None:
    model, mb, temperature = sampled_rollouts
    assert temperature == 0.7
    tempered = mismatch_stats([mb], frozen_logprobs(model, [mb], temperature))
    untempered = mismatch_stats([mb], frozen_logprobs(model, [mb]))
    assert tempered["mismatch/abs_diff/turn_0"] < 1e-4
    assert untempered["mismatch/abs_diff/turn_0"] > 1e-2


def test_temperature_divides_the_logits(sampled_rollouts) -> None:
    model, mb, _ = sampled_rollouts
    mask = mb.padded("mask", dtype=torch.bool)
    with torch.no_grad():
        logits = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits
        logp, entropy = token_logprobs(model, mb, with_entropy=True, temperature=0.5)
        raw, _ = token_logprobs(model, mb)
    rows, cols = torch.nonzero(mask, as_tuple=True)
    want = torch.log_softmax(logits[rows, cols - 1] / 0.5, -1)
    picked = want.gather(1, mb.input_ids[rows, cols].unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(logp[mask], picked, atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy[mask], -(want.exp() * want).sum(-1), atol=1e-5, rtol=0)
    assert not torch.allclose(raw[mask], logp[mask])
