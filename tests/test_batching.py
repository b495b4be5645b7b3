"""token_budget_batches: the one token-budget rule of the trainer, the HF engine and scorers."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from a2tgpo.batching import token_budget_batches


def test_known_cases():
    assert token_budget_batches([], 10) == []
    assert token_budget_batches([4, 2, 3, 2], 8) == [[1, 3], [2, 0]]  # 2 x 2, then 2 x 4
    assert token_budget_batches([4, 2, 3, 2], 8, longest_first=True) == [[0, 2], [1, 3]]
    assert token_budget_batches([20, 1], 10) == [[1], [0]]  # over budget: a batch of its own


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 50), max_size=40), st.integers(1, 200), st.booleans())
def test_every_row_once_in_length_order_and_within_budget(lengths, budget, longest_first):
    batches = token_budget_batches(lengths, budget, longest_first=longest_first)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    key = [-lengths[i] if longest_first else lengths[i] for i in flat]
    assert key == sorted(key)
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= budget
    # Greedy: the next batch's first row would not have fitted into the previous batch.
    for prev, nxt in pairwise(batches):
        longest = max(lengths[i] for i in [*prev, nxt[0]])
        assert (len(prev) + 1) * longest > budget
