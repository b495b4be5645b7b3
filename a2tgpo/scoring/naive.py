"""The naive IG scorer: one forward per probe over its whole context (the reference).

Probe k of a trajectory is `tokens[:boundary_k] + answer prefix + gold`; its cost is
its full length, so a trajectory's probes cost the sum of its context lengths (the
way IGPO computes IG). Probes are batched by token budget with right padding, which
changes nothing in the numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from a2tgpo.scoring.base import HFScorer, mean_by_owner, nan_values
from a2tgpo.scoring.probes import ProbeSet, fitting_probes


class NaiveScorer(HFScorer):
    def score(self, probe_sets: Sequence[ProbeSet]) -> list[np.ndarray]:
        values = nan_values(probe_sets)
        requests = fitting_probes(probe_sets, self.max_positions)
        lengths = [probe_sets[i].boundaries[k] + len(probe_sets[i].probe) for i, k in requests]
        for batch in self.batches(lengths):
            chosen = [requests[j] for j in batch]
            for (i, k), v in zip(chosen, self._score_batch(probe_sets, chosen), strict=True):
                values[i][k] = v
        return values

    @torch.no_grad()
    def _score_batch(self, probe_sets, chosen: list[tuple[int, int]]) -> list[float]:
        sequences = [probe_sets[i].probe_sequence(k) for i, k in chosen]
        width = max(len(s) for s in sequences)
        ids = torch.zeros(len(sequences), width, dtype=torch.long)
        attention = torch.zeros(len(sequences), width, dtype=torch.long)
        rows, positions, targets, owner = [], [], [], []
        for r, ((i, k), seq) in enumerate(zip(chosen, sequences, strict=True)):
            ids[r, : len(seq)] = torch.from_numpy(seq)
            attention[r, : len(seq)] = 1
            s = probe_sets[i]
            gold_start = s.boundaries[k] + s.gold_offset
            for j, token in enumerate(s.gold):
                rows.append(r)
                positions.append(gold_start + j - 1)  # the position that predicts gold token j
                targets.append(token)
                owner.append(r)
        hidden = self.hidden_states(
            input_ids=ids.to(self.device), attention_mask=attention.to(self.device)
        )
        logprobs = self.gold_logprobs(
            hidden,
            torch.tensor(rows, device=self.device),
            torch.tensor(positions, device=self.device),
            torch.tensor(targets, device=self.device),
        )
        return mean_by_owner(logprobs, owner, len(chosen))
