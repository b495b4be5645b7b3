"""A scripted engine for agent-loop tests that need no model: each turn writes a fixed text.

Turn k of a trajectory (k = the observations already in its context) writes
`turns[k]` (the last entry again past the end), tokenized with the real tokenizer, so
the loop, the tool and the trajectory rows run exactly as with a model.
"""

from __future__ import annotations

import numpy as np

from a2tgpo.engines.base import Engine, Generation, SamplingSpec, expand_specs
from a2tgpo.envs.prompting import OBSERVATION_OPEN


class ScriptedEngine(Engine):
    def __init__(self, tokenizer, turns: list[str], max_model_len: int = 4096):
        self.tokenizer = tokenizer
        self.turns = list(turns)
        self.max_model_len = max_model_len
        self.prompts_seen: list[list[int]] = []
        (self._open_id,) = tokenizer.encode(OBSERVATION_OPEN.strip(), add_special_tokens=False)

    def generate(
        self, prompts: list[list[int]], specs: SamplingSpec | list[SamplingSpec]
    ) -> list[Generation]:
        self.prompts_seen.extend(list(p) for p in prompts)
        return [
            self._turn(p, s)
            for p, s in zip(prompts, expand_specs(specs, len(prompts)), strict=True)
        ]

    def _turn(self, prompt: list[int], spec: SamplingSpec) -> Generation:
        k = min(prompt.count(self._open_id), len(self.turns) - 1)
        ids = self.tokenizer.encode(self.turns[k], add_special_tokens=False)[: spec.max_tokens]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Generation(ids, [-1.0] * len(ids), "stop", None, text)

    def prompt_logprobs(self, sequences: list[list[int]], starts: list[int]) -> list[np.ndarray]:
        return [np.zeros(len(s) - start) for s, start in zip(sequences, starts, strict=True)]

    def reload_weights(self, model_dir: str) -> None:
        pass

    def close(self) -> None:
        pass
