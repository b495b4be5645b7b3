"""Rollout correction weights (TIS / MIS, per token and per turn) and the weighted
policy_loss, on batches small enough to compute by hand."""

from __future__ import annotations

import pytest
import torch

from a2tgpo.algo import policy_loss, rollout_correction_weights
from tests.algo.test_loss import random_batch

# Two sequences of 5 tokens, cap C = 2. Per generated token d = old_logp - rollout_logp:
#   seq 0: [prompt, turn 0: d=0.5, turn 0: d=1.0, observation, turn 1: d=-0.5]
#   seq 1: [prompt, turn 0: d=0.0, turn 1: d=0.9, turn 1: d=-0.1, padding]
# Off the mask old_logp is nonzero garbage and rollout_logp 0: it must not matter.
MASK = torch.tensor([[0, 1, 1, 0, 1], [0, 1, 1, 1, 0]], dtype=torch.bool)
TURNS = torch.tensor([[-1, 0, 0, -1, 1], [-1, 0, 1, 1, -1]])
F64 = torch.float64
OLD = torch.tensor([[-9.0, -1.0, -2.0, -7.0, -0.5], [-3.0, -0.2, -1.5, -0.7, -4.0]], dtype=F64)
DIFF = torch.tensor([[0.0, 0.5, 1.0, 0.0, -0.5], [0.0, 0.0, 0.9, -0.1, 0.0]], dtype=F64)
ROLLOUT = torch.where(MASK, OLD - DIFF, 0.0)

# Token level, w = exp(d):
#   exp(0.5) = 1.6487212707, exp(1.0) = 2.7182818285 (> C), exp(-0.5) = 0.6065306597,
#   exp(0.0) = 1,            exp(0.9) = 2.4596031112 (> C), exp(-0.1) = 0.9048374180
TOKEN_TIS = [[0, 1.6487212707, 2.0, 0, 0.6065306597], [0, 1.0, 2.0, 0.9048374180, 0]]
TOKEN_MIS = [[0, 1.6487212707, 0.0, 0, 0.6065306597], [0, 1.0, 0.0, 0.9048374180, 0]]
TOKEN_CAPPED = [[0, 0, 1, 0, 0], [0, 0, 1, 0, 0]]
# Turn level, w = exp(mean d over the turn):
#   seq 0 turn 0: exp((0.5 + 1.0) / 2) = exp(0.75) = 2.1170000166 (> C: both tokens)
#   seq 0 turn 1: exp(-0.5) = 0.6065306597
#   seq 1 turn 0: exp(0) = 1
#   seq 1 turn 1: exp((0.9 - 0.1) / 2) = exp(0.4) = 1.4918246976
TURN_TIS = [[0, 2.0, 2.0, 0, 0.6065306597], [0, 1.0, 1.4918246976, 1.4918246976, 0]]
TURN_MIS = [[0, 0.0, 0.0, 0, 0.6065306597], [0, 1.0, 1.4918246976, 1.4918246976, 0]]
TURN_CAPPED = [[0, 1, 1, 0, 0], [0, 0, 0, 0, 0]]


def weights_for(mode, level="token", cap=2.0, turn_ids=TURNS):
    return rollout_correction_weights(
        OLD, ROLLOUT, MASK, mode=mode, cap=cap, level=level, turn_ids=turn_ids
    )


def close(actual: torch.Tensor, expected) -> None:
    expected = torch.tensor(expected, dtype=actual.dtype)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    ("mode", "level", "expected", "capped"),
    [
        ("tis", "token", TOKEN_TIS, TOKEN_CAPPED),
        ("mis", "token", TOKEN_MIS, TOKEN_CAPPED),
        ("tis", "turn", TURN_TIS, TURN_CAPPED),
        ("mis", "turn", TURN_MIS, TURN_CAPPED),
    ],
)
def test_weights_match_the_hand_computed_ones(mode, level, expected, capped):
    weights, capped_mask, _ = weights_for(mode, level)
    close(weights, expected)
    assert capped_mask.dtype == torch.bool
    assert capped_mask.tolist() == torch.tensor(capped, dtype=torch.bool).tolist()


def test_none_gives_ones_and_still_reports_capped_tokens():
    weights, capped, stats = weights_for("none")
    assert torch.equal(weights, torch.ones_like(OLD))
    assert capped.tolist() == torch.tensor(TOKEN_CAPPED, dtype=torch.bool).tolist()
    assert stats["weight_mean"] == 1.0
    assert stats["capped_fraction"] == pytest.approx(2 / 6)


def test_token_tis_stats_overall_and_per_turn():
    _, _, stats = weights_for("tis")
    assert stats["tokens"] == 6
    # (1.6487212707 + 2 + 0.6065306597 + 1 + 2 + 0.9048374180) / 6 = 8.1600893484 / 6
    assert stats["weight_mean"] == pytest.approx(1.3600148914, abs=1e-9)
    assert stats["capped_fraction"] == pytest.approx(2 / 6)
    assert stats["tokens_by_turn"] == [3, 3]
    # turn 0: (1.6487212707 + 2 + 1) / 3; turn 1: (0.6065306597 + 2 + 0.9048374180) / 3
    assert stats["weight_mean_by_turn"] == pytest.approx([1.5495737569, 1.1704560259], abs=1e-9)
    assert stats["capped_fraction_by_turn"] == pytest.approx([1 / 3, 1 / 3])


def test_turn_mis_stats_drop_the_whole_turn():
    _, _, stats = weights_for("mis", "turn")
    # turn 0: (0 + 0 + 1) / 3; turn 1: (0.6065306597 + 2 * 1.4918246976) / 3 = 3.5901800549 / 3
    assert stats["weight_mean_by_turn"] == pytest.approx([1 / 3, 1.1967266850], abs=1e-9)
    assert stats["capped_fraction_by_turn"] == pytest.approx([2 / 3, 0.0])
    # (1 + 3.5901800549) / 6
    assert stats["weight_mean"] == pytest.approx(0.7650300092, abs=1e-9)
    assert stats["capped_fraction"] == pytest.approx(2 / 6)


def test_without_turn_ids_there_are_no_per_turn_stats():
    _, _, stats = weights_for("tis", turn_ids=None)
    assert "weight_mean_by_turn" not in stats and "tokens_by_turn" not in stats


def test_extreme_log_weights_stay_finite_and_carry_no_gradient():
    old = torch.tensor([[-1.0, -1.0, -1.0]], requires_grad=True)
    rollout = torch.tensor([[-500.0, 400.0, -1.0]])  # w = exp(499), exp(-401), 1
    mask = torch.ones(1, 3, dtype=torch.bool)
    for mode, expected in (("tis", [2.0, 0.0, 1.0]), ("mis", [0.0, 0.0, 1.0])):
        weights, _, _ = rollout_correction_weights(old, rollout, mask, mode=mode, cap=2.0)
        assert torch.isfinite(weights).all() and not weights.requires_grad
        torch.testing.assert_close(weights, torch.tensor([expected]), rtol=0, atol=1e-8)


def test_an_empty_mask_reports_neutral_stats():
    empty = torch.zeros_like(MASK)
    _, _, stats = rollout_correction_weights(OLD, ROLLOUT, empty, mode="tis", cap=2.0)
    assert stats == {"tokens": 0, "weight_mean": 1.0, "capped_fraction": 0.0}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "is"}, "unknown rollout correction"),
        ({"level": "sequence"}, "unknown correction level"),
        ({"cap": 1.0}, "cap must be > 1"),
        ({"cap": 0.5}, "cap must be > 1"),
        ({"level": "turn", "turn_ids": None}, "needs turn_ids"),
        ({"rollout_logp": ROLLOUT[:, :4]}, "rollout_logp has shape"),
        ({"mask": MASK[:1]}, "mask has shape"),
        ({"turn_ids": TURNS[:, :3]}, "turn_ids has shape"),
        ({"old_logp": OLD[0], "rollout_logp": ROLLOUT[0], "mask": MASK[0]}, r"\[batch, tokens\]"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    args = {
        "old_logp": OLD,
        "rollout_logp": ROLLOUT,
        "mask": MASK,
        "mode": "tis",
        "cap": 2.0,
        "level": "token",
        "turn_ids": TURNS,
    }
    with pytest.raises(ValueError, match=message):
        rollout_correction_weights(**(args | kwargs))


# policy_loss with weights. One sequence, eps = 0.2, dual clip off, token-mean:
#   t0: A = 1,  ratio 1.5 -> max(-1.5, -1.2) = -1.2 (clipped), w = 2   -> -2.4
#   t1: A = -2, ratio 1   -> 2,                                w = 0.5 ->  1.0
#   t2: A = 0.5, ratio 1  -> -0.5,                             w = 0   ->  0
#   t3: masked (w = 5 must not matter)
# loss = (-2.4 + 1.0 + 0) / 3 = -0.4666666667
def weighted_case():
    old = torch.log(torch.tensor([[0.2, 0.5, 0.3, 0.4]], dtype=torch.float64))
    logp = (old + torch.tensor([[1.5, 1.0, 1.0, 1.0]], dtype=torch.float64).log()).detach()
    adv = torch.tensor([[1.0, -2.0, 0.5, 1.0]], dtype=torch.float64)
    eps = torch.full_like(adv, 0.2)
    mask = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    weights = torch.tensor([[2.0, 0.5, 0.0, 5.0]], dtype=torch.float64)
    return logp.requires_grad_(), old, adv, eps, mask, weights


def test_weighted_loss_equals_the_hand_computed_one():
    logp, old, adv, eps, mask, weights = weighted_case()
    loss, stats = policy_loss(logp, old, adv, eps, eps, mask, dual_clip=None, weights=weights)
    assert loss.item() == pytest.approx(-0.4666666667, abs=1e-9)
    assert stats["clip_fraction"] == pytest.approx(1 / 3)  # the stats ignore the weights


def test_gradient_flows_only_through_logp_scaled_by_the_weight():
    logp, old, adv, eps, mask, weights = weighted_case()
    weights.requires_grad_()
    plain, _ = policy_loss(logp, old, adv, eps, eps, mask, dual_clip=None)
    (plain_grad,) = torch.autograd.grad(plain, logp)
    loss, _ = policy_loss(logp, old, adv, eps, eps, mask, dual_clip=None, weights=weights)
    loss.backward()
    assert weights.grad is None  # detached inside policy_loss
    # d/dlogp of -A w rho / 3 where unclipped: t1: 2 * 0.5 / 3; t0 clipped, t2 w = 0, t3 masked
    close(logp.grad, [[0.0, 1 / 3, 0.0, 0.0]])
    torch.testing.assert_close(logp.grad, plain_grad * torch.where(mask, weights, 0.0).detach())


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"])
@pytest.mark.parametrize("ratio_level", ["token", "turn"])
def test_weights_none_is_bit_identical_to_the_unweighted_loss(agg, ratio_level):
    logp, old, adv, lo, hi, mask = random_batch(seed=3)
    turn_ids = torch.where(mask, torch.arange(12).expand(4, 12) // 4, -1)
    common = {"agg": agg, "ratio_level": ratio_level, "turn_ids": turn_ids}
    before, before_stats = policy_loss(logp, old, adv, lo, hi, mask, **common)
    after, after_stats = policy_loss(logp, old, adv, lo, hi, mask, weights=None, **common)
    assert torch.equal(before, after) and before_stats == after_stats


def test_weights_shape_is_checked():
    logp, old, adv, eps, mask, weights = weighted_case()
    with pytest.raises(ValueError, match="weights has shape"):
        policy_loss(logp, old, adv, eps, eps, mask, weights=weights[:, :3])
