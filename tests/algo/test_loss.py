"""policy_loss per spec section 5: values, aggregation, gradients, dual clip, turn ratio."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from a2tgpo.algo import aggregate, entropy_from_logits, low_var_kl, policy_loss
from tests.algo.reference import reference_token_loss


def random_batch(seed=0, batch=4, length=12):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(batch, length, generator=g, dtype=torch.float64) * 3
    logp = old + torch.randn(batch, length, generator=g, dtype=torch.float64) * 0.3
    adv = torch.randn(batch, length, generator=g, dtype=torch.float64)
    lo = 0.1 + 0.2 * torch.rand(batch, length, generator=g, dtype=torch.float64)
    hi = 0.1 + 0.2 * torch.rand(batch, length, generator=g, dtype=torch.float64)
    mask = torch.rand(batch, length, generator=g) < 0.7
    mask[0] = False  # one sequence without generated tokens
    return logp, old, adv, lo, hi, mask


@pytest.mark.parametrize("dual_clip", [None, 3.0, 1.5])
@pytest.mark.parametrize("seed", range(4))
def test_token_losses_match_the_spec(seed, dual_clip):
    logp, old, adv, lo, hi, mask = random_batch(seed)
    ref = reference_token_loss(*(t.numpy() for t in (logp, old, adv, lo, hi, mask)), dual_clip)
    loss, _ = policy_loss(logp, old, adv, lo, hi, mask, dual_clip=dual_clip)
    assert loss.item() == pytest.approx(ref.sum() / mask.sum().item(), rel=1e-12)
    loss, _ = policy_loss(
        logp, old, adv, lo, hi, mask, dual_clip=dual_clip, agg="seq-mean-token-sum"
    )
    per_seq = ref.sum(1)[mask.sum(1).numpy() > 0]
    assert loss.item() == pytest.approx(per_seq.mean(), rel=1e-12)
    loss, _ = policy_loss(
        logp, old, adv, lo, hi, mask, dual_clip=dual_clip, agg="seq-mean-token-mean"
    )
    counts = mask.sum(1).numpy()
    assert loss.item() == pytest.approx(
        (ref.sum(1)[counts > 0] / counts[counts > 0]).mean(), rel=1e-12
    )


def test_clipped_and_masked_tokens_get_zero_gradient():
    # token 0: A>0, ratio above 1+eps (clipped); token 1: A<0, ratio below 1-eps (clipped);
    # token 2: inside the range; token 3: masked; token 4: A<0, ratio huge (dual clip).
    old = torch.zeros(1, 5, dtype=torch.float64)
    logp = torch.tensor(
        [[math.log(1.5), math.log(0.5), math.log(1.05), 3.0, math.log(10.0)]],
        dtype=torch.float64,
        requires_grad=True,
    )
    adv = torch.tensor([[1.0, -1.0, 2.0, 1.0, -1.0]], dtype=torch.float64)
    eps = torch.full_like(adv, 0.2)
    mask = torch.tensor([[1, 1, 1, 0, 1]])
    loss, stats = policy_loss(logp, old, adv, eps, eps, mask, dual_clip=3.0)
    loss.backward()
    grad = logp.grad[0]
    assert grad[0] == 0 and grad[1] == 0 and grad[3] == 0 and grad[4] == 0
    assert grad[2].item() == pytest.approx(-2.0 * 1.05 / 4)  # d(-A rho)/dlogp = -A rho, / 4 tokens
    assert stats["clip_fraction"] == pytest.approx(2 / 4)  # tokens 0 and 1: the clipped term wins
    assert stats["dual_clip_fraction"] == pytest.approx(1 / 4)
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 2.1 + 3.0) / 4)


def test_per_turn_clip_ranges_are_used_per_token():
    old = torch.zeros(1, 2, dtype=torch.float64)
    logp = torch.full((1, 2), math.log(1.25), dtype=torch.float64, requires_grad=True)
    adv = torch.ones(1, 2, dtype=torch.float64)
    eps = torch.tensor([[0.2, 0.3]], dtype=torch.float64)  # narrow turn, wide turn
    loss, stats = policy_loss(logp, old, adv, eps, eps, torch.ones(1, 2))
    loss.backward()
    assert logp.grad[0, 0] == 0 and logp.grad[0, 1] != 0
    assert stats["clip_fraction"] == 0.5


def test_turn_level_ratio_shares_one_ratio_per_turn():
    old = torch.zeros(1, 4, dtype=torch.float64)
    logp = torch.tensor([[0.1, 0.3, -0.2, 5.0]], dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([[1.0, 1.0, -1.0, 0.0]], dtype=torch.float64)
    eps = torch.full_like(adv, 10.0)  # no clipping
    turn_ids = torch.tensor([[0, 0, 1, -1]])
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, stats = policy_loss(
        logp, old, adv, eps, eps, mask, ratio_level="turn", turn_ids=turn_ids, dual_clip=None
    )
    r0 = math.exp(0.2)  # mean of 0.1 and 0.3
    r1 = math.exp(-0.2)
    assert loss.item() == pytest.approx((-r0 - r0 + r1) / 3)
    loss.backward()
    assert logp.grad[0, 0].item() == pytest.approx(logp.grad[0, 1].item())
    assert logp.grad[0, 3] == 0
    assert stats["tokens_by_turn"] == [2, 1]
    with pytest.raises(ValueError, match="turn_ids"):
        policy_loss(logp, old, adv, eps, eps, mask, ratio_level="turn")


def test_denominator_makes_micro_batches_add_up_to_the_batch():
    logp, old, adv, lo, hi, mask = random_batch(3, batch=6)
    for agg, denom in (("token-mean", mask.sum().item()), ("seq-mean-token-mean", 5)):
        full, _ = policy_loss(logp, old, adv, lo, hi, mask, agg=agg)
        parts = sum(
            policy_loss(logp[s], old[s], adv[s], lo[s], hi[s], mask[s], agg=agg, denominator=denom)[
                0
            ]
            for s in (slice(0, 2), slice(2, 6))
        )
        assert parts.item() == pytest.approx(full.item(), rel=1e-12)


def test_garbage_under_the_mask_does_not_leak():
    logp, old, adv, lo, hi, mask = random_batch(5)
    logp = torch.where(mask, logp, torch.full_like(logp, float("nan")))
    loss, _ = policy_loss(logp, old, adv, lo, hi, mask)
    assert torch.isfinite(loss)


def test_clip_fraction_by_turn_index():
    old = torch.zeros(2, 3, dtype=torch.float64)
    logp = torch.log(torch.tensor([[1.5, 1.0, 1.0], [1.5, 1.5, 1.0]], dtype=torch.float64))
    adv = torch.ones(2, 3, dtype=torch.float64)
    eps = torch.full_like(adv, 0.2)
    turn_ids = torch.tensor([[0, 1, 1], [0, 0, 1]])
    _, stats = policy_loss(logp, old, adv, eps, eps, torch.ones(2, 3), turn_ids=turn_ids)
    assert stats["tokens_by_turn"] == [3, 3]
    np.testing.assert_allclose(stats["clip_fraction_by_turn"], [1.0, 0.0])


def test_bad_arguments():
    logp, old, adv, lo, hi, mask = random_batch()
    with pytest.raises(ValueError, match="agg"):
        policy_loss(logp, old, adv, lo, hi, mask, agg="sum")
    with pytest.raises(ValueError, match="ratio_level"):
        policy_loss(logp, old, adv, lo, hi, mask, ratio_level="seq")
    with pytest.raises(ValueError, match="shape"):
        policy_loss(logp, old[:, :3], adv, lo, hi, mask)
    with pytest.raises(ValueError, match="dual_clip"):
        policy_loss(logp, old, adv, lo, hi, mask, dual_clip=0.5)


def test_kl_and_entropy_terms():
    logp = torch.log(torch.tensor([[0.2, 0.5]]))
    assert torch.allclose(low_var_kl(logp, logp), torch.zeros(1, 2))
    assert bool((low_var_kl(logp, logp - 0.3) > 0).all())
    # k3 is an unbiased estimator of KL(p || q) for samples from p
    p = torch.tensor([0.7, 0.2, 0.1])
    q = torch.tensor([0.4, 0.4, 0.2])
    exact = (p * (p / q).log()).sum()
    k3 = (p * low_var_kl(p.log(), q.log())).sum()
    assert k3.item() == pytest.approx(exact.item(), rel=1e-5)
    uniform = torch.zeros(2, 3, 8)
    assert torch.allclose(entropy_from_logits(uniform), torch.full((2, 3), math.log(8)))
    assert aggregate(torch.ones(2, 2), torch.tensor([[1, 0], [0, 0]])).item() == 1.0
