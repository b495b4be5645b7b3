"""The packed scorer, in both forms, gives the naive reference's v values (fp32, 1e-4).

The model here has grouped-query attention (4 heads, 2 KV heads), as Qwen2.5 does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from a2tgpo.scoring.naive import NaiveScorer
from a2tgpo.scoring.packed import PackedScorer
from a2tgpo.scoring.probes import build_probe_sets as _build


def build_probe_sets(tokens, boundaries, golds, prefix):
    """Probe sets from token-id golds and an answer-prefix of token ids."""
    return _build(tokens, boundaries, [(list(prefix) + list(g), len(prefix)) for g in golds])


MAX_POSITIONS = 256


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=300,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    return Qwen2ForCausalLM(config).eval()


@pytest.fixture(params=[True, False], ids=["two_pass", "one_pass"])
def two_pass(request) -> bool:
    return request.param


def random_sets(seed: int):
    rng = np.random.default_rng(seed)
    sets = []
    for _ in range(6):
        length = int(rng.integers(40, 200))
        turns = int(rng.integers(2, 7))
        tokens = rng.integers(3, 300, size=length)
        boundaries = sorted(rng.choice(np.arange(8, length), size=turns, replace=False).tolist())
        gold = rng.integers(3, 300, size=int(rng.integers(1, 6))).tolist()
        sets += build_probe_sets(tokens, boundaries, [gold], [7, 8])
    return sets


def special_sets():
    rng = np.random.default_rng(99)
    tokens = rng.integers(3, 300, size=MAX_POSITIONS)
    return [
        # a 1-turn trajectory: only h_0 (the prompt)
        *build_probe_sets(tokens[:30], [12], [[5, 6, 7]], [7]),
        # a truncated trajectory: boundaries far before its end
        *build_probe_sets(tokens, [20, 60, 90], [[11, 12]], [7, 8]),
        # two golds: one set per gold
        *build_probe_sets(tokens[:120], [10, 50, 100], [[21, 22], [23, 24, 25, 26]], [7]),
        # probes right at the context limit (fits) and one past it (no value)
        *build_probe_sets(tokens, [40, MAX_POSITIONS - 4, MAX_POSITIONS - 3], [[31, 32]], [7, 8]),
        # no answer prefix: the first gold token is predicted by the context's last token
        *build_probe_sets(tokens[:80], [15, 70], [[41, 42, 43]], []),
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_packed_equals_naive_on_random_trajectories(model, seed, two_pass):
    sets = random_sets(seed)
    naive = NaiveScorer(model, tokens_per_batch=2048).score(sets)
    packed = PackedScorer(model, tokens_per_batch=2048, two_pass=two_pass).score(sets)
    for a, b in zip(naive, packed, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
        assert np.isfinite(a).all()


def test_edge_cases_agree(model, two_pass):
    sets = special_sets()
    naive = NaiveScorer(model).score(sets)
    packed = PackedScorer(model, two_pass=two_pass).score(sets)
    for a, b in zip(naive, packed, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    limit = naive[4]
    assert np.isfinite(limit[:2]).all() and np.isnan(limit[2])  # 253 + 4 > 256 does not fit
    assert len(naive[0]) == 1 and np.isfinite(naive[0][0])


def test_batching_changes_nothing(model, two_pass):
    sets = random_sets(3)
    one = PackedScorer(model, tokens_per_batch=1 << 20, two_pass=two_pass).score(sets)
    many = PackedScorer(model, tokens_per_batch=256, two_pass=two_pass).score(sets)
    for a, b in zip(one, many, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_values_are_mean_gold_logprobs(model, two_pass):
    # v equals a hand computation from one plain forward over context + probe.
    tokens = np.arange(3, 43)
    (probe_set,) = build_probe_sets(tokens, [25], [[50, 51, 52]], [7])
    seq = torch.tensor(probe_set.probe_sequence(0)).unsqueeze(0)
    with torch.no_grad():
        logp = torch.log_softmax(model(seq).logits[0].float(), -1)
    expected = np.mean([logp[25 + j, 50 + j].item() for j in range(3)])  # gold j at 26 + j
    got = PackedScorer(model, two_pass=two_pass).score([probe_set])[0][0]
    assert got == pytest.approx(expected, abs=1e-5)
