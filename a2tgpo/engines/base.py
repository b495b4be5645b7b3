"""The one generation interface the rollout loop and the IG scorer use.

Two implementations: `VLLMEngine` (vLLM's offline `LLM`, CPU or CUDA build) and
`HFEngine` (a transformers fallback). `make_engine` picks one by name.

Contract shared by both engines:
  - Token ids in, token ids out. Generated tokens are returned exactly as sampled and
    are never re-tokenized from text, so the trainer sees the policy's own tokens.
  - Generation stops at EOS (`<|im_end|>`, kept as the last token id: the caller
    decides what to do with it), at the first occurrence of a caller's stop string
    in the decoded text, or after `max_tokens`. When a stop string ends inside a
    token, the whole token is kept (token ids cannot be split); `text` is then the
    decode of all kept tokens and may run a few characters past the stop string.
  - Sampled-token log-probs follow the engine's `logprobs_mode` (fixed when the
    engine starts, like vLLM's own setting):
      "raw": the unscaled model log-probs, log_softmax(logits), whatever the
        temperature / top-k / top-p used for sampling (vLLM "raw_logprobs").
      "sampled": the log-probs of the distribution the token was drawn from:
        softmax(logits / T) with the top-k / top-p cut applied and renormalized over
        the kept tokens (vLLM "processed_logprobs"). The trainer divides its logits by
        T too (`a2tgpo.engines.options.trainer_temperature`), so the two agree unless
        top-k / top-p cut the distribution, which the trainer cannot reproduce.
    A greedy request (T = 0) gets raw log-probs in both modes (vLLM's greedy path).
  - `prompt_logprobs` is teacher forcing: log p(tok_j | tok_<j) under the same model,
    always raw (vLLM: "prompt tokens do not go through sampling processors").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np


@dataclass(frozen=True)
class SamplingSpec:
    """How to sample one request. temperature 0 = greedy; seed None = engine's RNG."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # keep the k most likely tokens; 0 = off (vLLM's convention)
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = True
    # Benchmarks only: keep sampling past EOS so every sequence has max_tokens.
    ignore_eos: bool = False
    # Constrain the output to this regex (vLLM structured outputs): scripted policies
    # in tests, format-constrained sampling. The HF engine refuses it. vLLM then returns
    # log-probs of the constrained distribution, not of the raw model.
    regex: str | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        # A list would make the frozen spec unhashable and is easy to pass by mistake.
        object.__setattr__(self, "stop", tuple(self.stop))


@dataclass
class Generation:
    """One generated continuation.

    finish_reason: "stop" (a stop string or EOS) or "length" (max_tokens or the
    context limit). stop_reason: the matched stop string, None for EOS and length.
    logprobs: one log-prob per token id (the engine's `logprobs_mode`), None if not
    requested.
    text: decode of `token_ids` with special tokens (EOS) skipped.
    """

    token_ids: list[int]
    logprobs: list[float] | None
    finish_reason: str
    stop_reason: str | None = None
    text: str = ""


class Engine(ABC):
    """A loaded policy that generates in batches and scores token sequences."""

    tokenizer: Any  # the model's Hugging Face tokenizer

    @abstractmethod
    def generate(
        self, prompts: list[list[int]], specs: SamplingSpec | list[SamplingSpec]
    ) -> list[Generation]:
        """Continue every prompt; all advance together. One spec, or one per prompt."""

    @abstractmethod
    def prompt_logprobs(self, sequences: list[list[int]], starts: list[int]) -> list[np.ndarray]:
        """Teacher-forced log p(tok_j | tok_<j) for j in [start, len) of each sequence.

        Returns float64 arrays of length len(seq) - start; start must be >= 1 (the
        first token has no context to be predicted from).
        """

    @abstractmethod
    def reload_weights(self, model_dir: str) -> None:
        """Replace the weights with those of `model_dir` (same architecture), in place."""

    @abstractmethod
    def close(self) -> None:
        """Release the model (and any engine process). Safe to call twice."""

    model_dir: str = ""  # the folder of the weights held (the base when an adapter is on)
    adapter_dir: str | None = None  # the LoRA adapter applied on them, if any

    def set_adapter(self, adapter_dir: str | None) -> None:
        """Apply the LoRA adapter in `adapter_dir` (None: none) on the base weights held."""
        raise NotImplementedError(f"{type(self).__name__} does not serve LoRA adapters")

    def hold(self, model_dir: str, adapter_dir: str | None = None) -> bool:
        """Hold the policy `model_dir` (+ `adapter_dir`), reloading in place only what
        differs; returns whether anything was loaded."""
        changed = False
        if str(model_dir) != self.model_dir:
            self.reload_weights(str(model_dir))
            changed = True
        if (str(adapter_dir) if adapter_dir else None) != self.adapter_dir:
            self.set_adapter(str(adapter_dir) if adapter_dir else None)
            changed = True
        return changed

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


LogprobsMode = Literal["raw", "sampled"]
VLLM_LOGPROBS_MODES: dict[str, str] = {"raw": "raw_logprobs", "sampled": "processed_logprobs"}


def check_logprobs_mode(mode: str) -> None:
    if mode not in VLLM_LOGPROBS_MODES:
        raise ValueError(f"logprobs_mode must be 'raw' or 'sampled', got {mode!r}")


def expand_specs(specs: SamplingSpec | list[SamplingSpec], n: int) -> list[SamplingSpec]:
    """One spec per prompt: broadcast a single spec, or check the list's length."""
    if isinstance(specs, SamplingSpec):
        return [specs] * n
    if len(specs) != n:
        raise ValueError(f"got {len(specs)} sampling specs for {n} prompts")
    return list(specs)


def check_starts(sequences: list[list[int]], starts: list[int]) -> None:
    """Validate `prompt_logprobs` arguments (same rules for every engine)."""
    if len(sequences) != len(starts):
        raise ValueError(f"got {len(starts)} starts for {len(sequences)} sequences")
    for i, (seq, start) in enumerate(zip(sequences, starts, strict=True)):
        if not 1 <= start <= len(seq):
            raise ValueError(f"sequence {i}: start {start} not in [1, {len(seq)}]")


def resolve_dtype(dtype: str, *, on_gpu: bool | None = None) -> str:
    """'auto' = bfloat16 on a GPU, float32 on CPU (ModelConfig.dtype's rule), as a name.

    on_gpu: whether the model will run on a GPU; None = whether CUDA is available (the
    trainer says, since DS_ACCELERATOR=cpu keeps it on CPU beside a GPU).
    """
    if dtype != "auto":
        return dtype
    if on_gpu is None:
        import torch  # late: importing the engine interface stays torch-free

        on_gpu = torch.cuda.is_available()
    return "bfloat16" if on_gpu else "float32"


def torch_dtype(dtype: str, *, on_gpu: bool | None = None) -> Any:
    """`resolve_dtype` as a torch.dtype, for loading HF models in-process."""
    import torch

    return getattr(torch, resolve_dtype(dtype, on_gpu=on_gpu))
