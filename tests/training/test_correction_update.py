"""The rollout correction in the trainer's micro-batch loss, on a tiny random HF model
(no DeepSpeed, no vLLM: seconds).

Nothing is updated between the old log-probs and the loss, so the PPO ratio is 1 and
the loss is -sum(A w) / tokens: shifting the stored rollout log-probs by a known d
gives w = exp(d) (capped by tis, dropped by mis) and a loss computed here by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from a2tgpo.config import TrainConfig
from a2tgpo.data.fakes import fake_trajectories
from a2tgpo.training.batching import pack, samples_from_table
from a2tgpo.training.update import (
    UpdateStats,
    frozen_logprobs,
    micro_batch_loss,
    mini_batch_denominator,
)

VOCAB = 64
CAP = 2.0


class Engine:
    """What micro_batch_loss needs of a DeepSpeed engine: `.module` and a forward."""

    def __init__(self, model):
        self.module = model

    def __call__(self, **kwargs):
        return self.module(**kwargs)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
        max_position_embeddings=128,
    )
    model = Qwen2ForCausalLM(config).eval()
    table = fake_trajectories(4, tokens=48, turns=2, schema_name="advantaged", vocab=VOCAB, seed=3)
    batches, too_long = pack(samples_from_table(table), budget=1024)
    assert len(batches) == 1 and not too_long
    mb = batches[0]
    old = frozen_logprobs(model, [mb])[id(mb)]
    return Engine(model), mb, old


def loss_of(setup, mode="none", level="token", shift=None):
    """micro_batch_loss with rollout log-probs = old - shift (shift: per sample, per token)."""
    engine, mb, old = setup
    for i, s in enumerate(mb.samples):
        rollout = old[i, : len(s.tokens)].numpy().copy()
        if shift is not None:
            rollout -= np.where(s.mask, shift[i], 0.0).astype(np.float32)
        s.rollout_logprobs = rollout
    train = TrainConfig(rollout_correction=mode, correction_cap=CAP, ratio_level=level)
    denominator = mini_batch_denominator([mb], train.loss_agg)
    return micro_batch_loss(engine, mb, old, None, train, denominator)


def shifts(mb, level):
    """Per token log w: 0.3 in turn 0, 1.0 (> log 2, capped) in turn 1, and at turn level
    +-0.6 alternating on top, which caps single tokens but not the turn's mean."""
    out = []
    for s in mb.samples:
        d = np.where(s.turn_ids == 1, 1.0, 0.3)
        if level == "turn":
            d = d + np.where(np.arange(len(d)) % 2 == 0, 0.6, -0.6)
        out.append(d)
    return out


def expected_weights(mb, shift, mode, level):
    out = []
    for s, d in zip(mb.samples, shift, strict=True):
        log_w = d.copy()
        if level == "turn":  # the turn's mean log-weight (geometric mean of w)
            for k in np.unique(s.turn_ids[s.mask]):
                turn = s.mask & (s.turn_ids == k)
                log_w[turn] = d[turn].mean()
        w = np.exp(log_w)
        out.append(np.minimum(w, CAP) if mode == "tis" else np.where(w > CAP, 0.0, w))
    return out


def hand_loss(mb, weights) -> float:
    pairs = zip(mb.samples, weights, strict=True)
    return sum(float((-s.advantage * w)[s.mask].sum()) for s, w in pairs) / mb.loss_tokens


@pytest.mark.parametrize("level", ["token", "turn"])
@pytest.mark.parametrize("mode", ["tis", "mis"])
def test_equal_logprobs_leave_the_loss_unchanged(setup, mode, level):
    plain, plain_stats = loss_of(setup, "none", level)
    corrected, stats = loss_of(setup, mode, level)
    torch.testing.assert_close(corrected, plain, rtol=1e-6, atol=0)
    assert stats["correction_weight_mean"] == 1.0 and stats["correction_capped_fraction"] == 0.0
    assert not any(key.startswith("correction") for key in plain_stats)


@pytest.mark.parametrize("level", ["token", "turn"])
@pytest.mark.parametrize("mode", ["tis", "mis"])
def test_shifted_logprobs_weight_the_loss(setup, mode, level):
    mb = setup[1]
    shift = shifts(mb, level)
    weights = expected_weights(mb, shift, mode, level)
    loss, stats = loss_of(setup, mode, level, shift)
    assert loss.item() == pytest.approx(hand_loss(mb, weights), abs=1e-5)
    assert loss.item() != pytest.approx(loss_of(setup, "none", level)[0].item(), abs=1e-3)
    loss.backward()  # the weighted loss still trains the model
    valid = np.concatenate([w[s.mask] for s, w in zip(mb.samples, weights, strict=True)])
    assert stats["correction_tokens"] == mb.loss_tokens
    assert stats["correction_weight_mean"] == pytest.approx(valid.mean(), abs=1e-5)
    if level == "token":  # turn 1 (w = e) is capped entirely, turn 0 (w = e^0.3) not at all
        assert stats["correction_capped_fraction_by_turn"] == [0.0, 1.0]
        kept = math.exp(0.3)
        assert stats["correction_weight_mean_by_turn"][0] == pytest.approx(kept, abs=1e-5)


def test_missing_rollout_logprobs_raise_a_clear_error(setup):
    engine, mb, old = setup
    loss_of(setup, "tis")  # fills every sample's rollout log-probs
    saved = mb.samples[1].rollout_logprobs
    mb.samples[1].rollout_logprobs = None
    try:
        train = TrainConfig(rollout_correction="mis")
        with pytest.raises(ValueError, match=r"rollout\.logprobs.*rollout_logprobs"):
            micro_batch_loss(engine, mb, old, None, train, float(mb.loss_tokens))
        # without the correction the missing column does not matter
        micro_batch_loss(engine, mb, old, None, TrainConfig(), float(mb.loss_tokens))
    finally:
        mb.samples[1].rollout_logprobs = saved


def test_update_stats_report_the_correction_only_when_it_ran(setup):
    off = UpdateStats()
    off.add(loss_of(setup, "none")[1])
    assert off.summary()["correction"] == {}
    on = UpdateStats()
    _, stats = loss_of(setup, "tis", shift=shifts(setup[1], "token"))
    on.add(stats)
    metrics = on.summary()["correction"]
    assert metrics["correction/weight_mean"] == pytest.approx(stats["correction_weight_mean"])
    assert metrics["correction/capped_fraction/turn_1"] == 1.0
    assert set(metrics) == {
        "correction/weight_mean",
        "correction/capped_fraction",
        "correction/weight_mean/turn_0",
        "correction/capped_fraction/turn_0",
        "correction/weight_mean/turn_1",
        "correction/capped_fraction/turn_1",
    }


def test_update_stats_average_the_correction_by_tokens():
    base = {
        "clip_fraction": 0.0,
        "clip_fraction_low": 0.0,
        "clip_fraction_high": 0.0,
        "dual_clip_fraction": 0.0,
        "approx_kl": 0.0,
        "ratio_mean": 1.0,
    }
    stats = UpdateStats()
    for tokens, weight, capped, by_turn in ((1, 2.0, 1.0, [1]), (3, 1.0, 0.0, [2, 1])):
        stats.add(
            base
            | {
                "tokens": tokens,
                "correction_tokens": tokens,
                "correction_weight_mean": weight,
                "correction_capped_fraction": capped,
                "correction_tokens_by_turn": by_turn,
                "correction_weight_mean_by_turn": [weight] * len(by_turn),
                "correction_capped_fraction_by_turn": [capped] * len(by_turn),
            }
        )
    metrics = stats.summary()["correction"]
    assert metrics["correction/weight_mean"] == pytest.approx((2.0 + 3 * 1.0) / 4)
    assert metrics["correction/capped_fraction"] == pytest.approx(1 / 4)
    assert metrics["correction/weight_mean/turn_0"] == pytest.approx((2.0 + 2 * 1.0) / 3)
    assert metrics["correction/capped_fraction/turn_0"] == pytest.approx(1 / 3)
    assert metrics["correction/weight_mean/turn_1"] == 1.0
