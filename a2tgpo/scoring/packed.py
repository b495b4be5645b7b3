"""The packed IG scorer: one forward per trajectory for all of its probes.

Row layout for a trajectory with probes after boundaries b_0 < ... < b_{K-1}:

    [ tokens[:b_{K-1}] | probe_0 | probe_1 | ... | probe_{K-1} ]

A 4D boolean attention mask fences the probes off: context tokens are causal among
themselves; probe k's tokens see the context up to b_k and, causally, themselves,
never another probe. Position ids restart at b_k for probe k, so every probe sees
exactly what it would see alone (the naive scorer's numbers, up to float rounding).
The trajectory's tokens are computed once: the cost is one forward over the
trajectory plus the probes' own tokens, instead of the sum of all context lengths.
Logits are computed only at the positions that predict gold tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from a2tgpo.scoring.base import HFScorer, nan_values
from a2tgpo.scoring.naive import _mean_by_owner
from a2tgpo.scoring.probes import ProbeSet, fits


class PackedScorer(HFScorer):
    def score(self, probe_sets: Sequence[ProbeSet]) -> list[np.ndarray]:
        values = nan_values(probe_sets)
        plans = []
        for i, s in enumerate(probe_sets):
            ks = [k for k in range(len(s.boundaries)) if fits(s, k, self.max_positions)]
            if ks:
                plans.append((i, ks))
        lengths = [_row_length(probe_sets[i], ks) for i, ks in plans]
        for batch in self.batches(lengths):
            chosen = [plans[j] for j in batch]
            scores = self._score_batch(probe_sets, chosen)
            for (i, ks), row_scores in zip(chosen, scores, strict=True):
                values[i][ks] = row_scores
        return values

    @torch.no_grad()
    def _score_batch(self, probe_sets, chosen) -> list[list[float]]:
        width = max(_row_length(probe_sets[i], ks) for i, ks in chosen)
        batch = len(chosen)
        ids = torch.zeros(batch, width, dtype=torch.long)
        positions = torch.zeros(batch, width, dtype=torch.long)
        # Each query i may see keys j <= context_limit[i], and keys in [segment_start[i], i].
        context_limit = torch.full((batch, width), -1, dtype=torch.long)
        segment_start = torch.arange(width).repeat(batch, 1)
        rows, predictors, targets, owner = [], [], [], []
        probe_id = 0
        for r, (i, ks) in enumerate(chosen):
            s = probe_sets[i]
            ctx = max(s.boundaries[k] for k in ks)
            probe = torch.tensor(s.probe)
            q = len(s.probe)
            ids[r, :ctx] = torch.from_numpy(s.tokens[:ctx])
            positions[r, :ctx] = torch.arange(ctx)
            context_limit[r, :ctx] = torch.arange(ctx)
            for slot, k in enumerate(ks):
                start, b = ctx + slot * q, s.boundaries[k]
                ids[r, start : start + q] = probe
                positions[r, start : start + q] = torch.arange(b, b + q)
                context_limit[r, start : start + q] = b - 1
                segment_start[r, start : start + q] = start
                for j, token in enumerate(s.gold):
                    t = s.gold_offset + j  # gold token j sits at probe index t
                    rows.append(r)
                    predictors.append(start + t - 1 if t > 0 else b - 1)
                    targets.append(token)
                    owner.append(probe_id)
                probe_id += 1
        keys = torch.arange(width)
        query = torch.arange(width).view(1, width, 1)
        mask = (keys.view(1, 1, width) <= context_limit.unsqueeze(2)) | (
            (keys.view(1, 1, width) >= segment_start.unsqueeze(2))
            & (keys.view(1, 1, width) <= query)
        )
        hidden = self.hidden_states(
            input_ids=ids.to(self.device),
            attention_mask=mask.unsqueeze(1).to(self.device),
            position_ids=positions.to(self.device),
        )
        logprobs = self.gold_logprobs(
            hidden,
            torch.tensor(rows, device=self.device),
            torch.tensor(predictors, device=self.device),
            torch.tensor(targets, device=self.device),
        )
        probes_per_row = [len(ks) for _, ks in chosen]
        means = _mean_by_owner(logprobs, owner, sum(probes_per_row))
        out, at = [], 0
        for n in probes_per_row:
            out.append(means[at : at + n])
            at += n
        return out


def _row_length(s: ProbeSet, ks: list[int]) -> int:
    return max(s.boundaries[k] for k in ks) + len(ks) * len(s.probe)
