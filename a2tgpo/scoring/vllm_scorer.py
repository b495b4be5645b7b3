"""The vLLM IG scorer: each probe as a prompt, teacher-forced log-probs from the engine.

Probe k of a trajectory is `tokens[:boundary_k] + probe`; the engine returns the
prompt log-probs of the gold tokens. This runs on the rollout engine itself, so no
second copy of the policy is needed.

What it costs: all probes of a trajectory share their prefix, but vLLM never *reads*
its prefix cache for a request that asks for prompt log-probs (see
a2tgpo/engines/vllm_engine.py), so every probe recomputes its whole context: the
naive scorer's work, on the engine's kernels (benchmarks/ig_scoring.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from a2tgpo.engines.base import Engine
from a2tgpo.scoring.base import Scorer, nan_values
from a2tgpo.scoring.probes import ProbeSet, fitting_probes, mean_gold_logprob


class VLLMScorer(Scorer):
    def __init__(self, engine: Engine, max_model_len: int | None = None):
        """max_model_len: the engine's context limit (default: its `max_model_len`)."""
        self.engine = engine
        if max_model_len is None:
            max_model_len = getattr(engine, "max_model_len", None)
        # vLLM accepts a prompt only with room for one output token (it rejects a prompt
        # of exactly max_model_len), so a probe may fill max_model_len - 1 positions.
        self.max_positions = None if max_model_len is None else max_model_len - 1

    def score(self, probe_sets: Sequence[ProbeSet]) -> list[np.ndarray]:
        values = nan_values(probe_sets)
        requests = fitting_probes(probe_sets, self.max_positions)
        if not requests:
            return values
        sequences = [probe_sets[i].probe_sequence(k).tolist() for i, k in requests]
        starts = [probe_sets[i].boundaries[k] + probe_sets[i].gold_offset for i, k in requests]
        for (i, k), logprobs in zip(
            requests, self.engine.prompt_logprobs(sequences, starts), strict=True
        ):
            values[i][k] = mean_gold_logprob(logprobs)
        return values
