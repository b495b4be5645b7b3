"""Answer probes: what every IG scorer teacher-forces (spec section 1).

For a trajectory with T turns, the contexts h_0 .. h_{T-1} are its token prefixes up to
each turn's first generated token (`boundaries`: turn k starts at boundaries[k], so
h_0 is the prompt). A probe is ANSWER_PREFIX + gold, tokenized piece by piece (so the
gold's tokens are the same after every context), and v(h) is the mean log-prob of
the gold's tokens after `context + probe prefix`. Prefix and gold are tokenized
together, as the policy would write them, and the tokens covering the gold's
characters are the scored ones (with prefix "<answer> " the gold " Zek Branu" is the
same tokens the policy emits after its answer tag). The answer suffix is never
scored and, in a causal model, cannot change the gold's log-probs, so it is not
appended.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ProbeSet:
    """One trajectory and one gold: probes after each of its turn boundaries."""

    tokens: np.ndarray  # the trajectory's token ids (int64); only tokens[:max(boundaries)] matter
    boundaries: tuple[int, ...]  # context lengths: probe k follows tokens[:boundaries[k]]
    probe: tuple[int, ...]  # answer-prefix tokens then gold tokens
    gold_offset: int  # the gold starts at probe[gold_offset]

    @property
    def gold(self) -> tuple[int, ...]:
        return self.probe[self.gold_offset :]

    @property
    def context_length(self) -> int:
        return max(self.boundaries)

    def probe_sequence(self, k: int) -> np.ndarray:
        """The naive form of probe k: context tokens then the probe."""
        return np.concatenate([self.tokens[: self.boundaries[k]], np.asarray(self.probe)])


def probe_tokens(tokenizer, prefix: str, gold: str) -> tuple[list[int], int]:
    """(token ids of prefix + gold, index of the first token covering the gold's text)."""
    encoded = tokenizer(prefix + gold, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    start = next((i for i, (_, end) in enumerate(offsets) if end > len(prefix)), len(ids))
    return list(ids), start


def build_probe_sets(
    tokens: np.ndarray,
    boundaries: list[int],
    probes: list[tuple[list[int], int]],
) -> list[ProbeSet]:
    """One ProbeSet per probe (ids, gold offset) with a non-empty gold, e.g. one per gold."""
    tokens = np.asarray(tokens, dtype=np.int64)
    return [
        ProbeSet(tokens, tuple(boundaries), tuple(ids), offset)
        for ids, offset in probes
        if offset < len(ids)
    ]


def fits(probe_set: ProbeSet, k: int, max_positions: int | None) -> bool:
    """Whether probe k stays inside the model's context (its last position < max)."""
    return max_positions is None or probe_set.boundaries[k] + len(probe_set.probe) <= max_positions


def fitting_probes(
    probe_sets: Sequence[ProbeSet], max_positions: int | None
) -> list[tuple[int, int]]:
    """(set index, turn k) of every probe that fits the context; the rest stay NaN."""
    return [
        (i, k)
        for i, s in enumerate(probe_sets)
        for k in range(len(s.boundaries))
        if fits(s, k, max_positions)
    ]


def mean_gold_logprob(logprobs: np.ndarray) -> float:
    """v(h): mean over the gold tokens of their log-probs."""
    return float(np.mean(logprobs)) if len(logprobs) else float("nan")
