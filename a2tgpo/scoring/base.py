"""The scorer interface, and what the HF-model scorers share.

A scorer turns ProbeSets into v values: for each set, one value per boundary (NaN
where the probe would not fit in the model's context). Scorers differ only in how
they compute the same numbers (naive, packed, vLLM), and tests hold them equal.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch

from a2tgpo.batching import token_budget_batches
from a2tgpo.scoring.probes import ProbeSet


class Scorer(ABC):
    """Computes v(h) for every boundary of every probe set."""

    max_positions: int | None = None

    @abstractmethod
    def score(self, probe_sets: Sequence[ProbeSet]) -> list[np.ndarray]:
        """v per boundary for each set, float64, NaN where the probe does not fit."""


class HFScorer(Scorer):
    """Scorers running an HF causal LM in-process (no grad, eval mode, SDPA attention)."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokens_per_batch: int = 16384,
        max_positions: int | None = None,
    ):
        """max_positions: the longest context + probe to score (default: the model's own)."""
        self.model = model.eval()
        self.tokens_per_batch = tokens_per_batch
        self.device = next(model.parameters()).device
        if max_positions is None:
            max_positions = getattr(model.config, "max_position_embeddings", None)
        self.max_positions = max_positions

    @torch.no_grad()
    def gold_logprobs(
        self,
        hidden: torch.Tensor,
        rows: torch.Tensor,
        positions: torch.Tensor,
        targets: torch.Tensor,
    ) -> torch.Tensor:
        """log p(target) from the hidden states at (row, position): logits only where needed."""
        picked = hidden[rows, positions]
        logits = self.model.get_output_embeddings()(picked).float()
        return torch.log_softmax(logits, dim=-1).gather(1, targets.unsqueeze(1)).squeeze(1)

    def hidden_states(self, **inputs) -> torch.Tensor:
        return self.model.base_model(**inputs, use_cache=False).last_hidden_state

    def batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices grouped so that rows x longest row <= tokens_per_batch (sorted by length)."""
        return token_budget_batches(lengths, self.tokens_per_batch)


def nan_values(probe_sets: Sequence[ProbeSet]) -> list[np.ndarray]:
    return [np.full(len(s.boundaries), np.nan) for s in probe_sets]


def mean_by_owner(logprobs: torch.Tensor, owner: Sequence[int], count: int) -> list[float]:
    """Mean (float64) of the gold-token log-probs of each probe: v per probe, 0..count-1."""
    owner_t = torch.tensor(owner, device=logprobs.device)
    sums = torch.zeros(count, dtype=torch.float64, device=logprobs.device)
    sums.index_add_(0, owner_t, logprobs.double())
    counts = torch.bincount(owner_t, minlength=count).clamp(min=1)
    return (sums / counts).tolist()
