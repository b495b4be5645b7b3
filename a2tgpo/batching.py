"""Token-budget batching: the one rule the trainer, the HF engine and the scorers share.

Rows are padded to the longest row of their batch, so a batch costs rows x longest
tokens. Sorting by length first keeps rows of similar length together (little
padding) and lets a greedy cut fill each batch up to the budget. Standard library
only, so any layer may import it.
"""

from __future__ import annotations

from collections.abc import Sequence


def token_budget_batches(
    lengths: Sequence[int], budget: int, *, longest_first: bool = False
) -> list[list[int]]:
    """Indices into `lengths`, grouped so that rows x longest row <= `budget` tokens.

    Indices are sorted by length (stably; shortest first, or longest first) and cut
    greedily: a row joins the current batch while (rows + 1) x longest still fits. A row
    longer than the budget gets a batch of its own; callers that cannot run it leave it
    out beforehand.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i] if longest_first else lengths[i])
    batches: list[list[int]] = []
    longest = 0
    for i in order:
        longest_if_added = max(longest, lengths[i])
        if batches and longest_if_added * (len(batches[-1]) + 1) <= budget:
            batches[-1].append(i)
            longest = longest_if_added
        else:
            batches.append([i])
            longest = lengths[i]
    return batches
