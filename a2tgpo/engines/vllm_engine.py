"""vLLM offline engine (CPU build here, CUDA build on a cluster).

vllm is imported lazily so the rest of the project imports without it. The `LLM`
object stays reachable as `engine.llm` (weight reloading, done elsewhere, needs it).

vLLM facts this module relies on (checked against vllm 0.32):
  - `LLM` spawns an engine-core child process: scripts must create the engine under
    `if __name__ == "__main__":`, and `close()` shuts that process down explicitly
    (a bare interpreter exit can abort with "terminate called without an active
    exception").
  - `logprobs_mode="raw_logprobs"` makes sampled-token log-probs log_softmax of the
    raw logits, before temperature / top-p (see base.py for why).
  - `include_stop_str_in_output=True` keeps the token that completes a stop string
    (vLLM drops only tokens generated *after* it), which is the contract we want.
  - Requests that ask for prompt log-probs do not *read* the prefix cache (vLLM sets
    `skip_reading_prefix_cache` for them, since cached positions would have no
    log-probs), so `prompt_logprobs` always recomputes the whole sequence.
  - On CPU, a *seeded* request whose prompt is prefilled in chunks kills the engine
    ("RuntimeError: CPU Generator does not use offset": the model runner rewinds the
    request's generator with `set_offset`, a CUDA-only Philox detail). A big batch of
    prompts exceeds one step's token budget, so some prompts would be chunked: on CPU
    we turn chunked prefill off and make the step budget hold a whole max-length
    prompt (`max_num_batched_tokens >= max_model_len`).
  - On CPU the KV cache must be sized explicitly (`kv_cache_memory_bytes`): the
    default fraction of RAM exceeds what the NUMA node reports free.
"""

from __future__ import annotations

import gc
import os
from typing import Any

import numpy as np

from a2tgpo.engines.base import (
    Engine,
    Generation,
    SamplingSpec,
    check_starts,
    expand_specs,
)

# vLLM's CPU default for one scheduler step's token budget (offline `LLM`).
_CPU_STEP_TOKENS = 4096


class VLLMEngine(Engine):
    """A policy served by vLLM's offline `LLM` (one instance per process)."""

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        dtype: str = "float32",
        max_model_len: int = 2048,
        seed: int = 0,
        kv_cache_gib: float | None = 1.0,
        tensor_parallel_size: int = 1,
        enable_prefix_caching: bool = True,
        enforce_eager: bool | None = None,
        **llm_kwargs: Any,
    ) -> None:
        """kv_cache_gib None = vLLM's own sizing (GPU: gpu_memory_utilization).

        enforce_eager None = eager on CPU (torch.compile would cost minutes at start
        for little gain on a tiny model), CUDA graphs on GPU. Extra kwargs go to `LLM`.
        """
        from transformers import AutoTokenizer

        # Spawn, not fork, vLLM's processes: a forked worker inherits every module of
        # this process, and vLLM's kernel-override scan over sys.modules crashes on
        # llvmlite's wrappers (numba, loaded by bm25s, the search tool's BM25).
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        from vllm import LLM
        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()
        if enforce_eager is None:
            enforce_eager = on_cpu
        kwargs: dict[str, Any] = dict(
            model=str(model_dir),
            dtype=dtype,
            max_model_len=max_model_len,
            seed=seed,
            enforce_eager=enforce_eager,
            enable_prefix_caching=enable_prefix_caching,
            tensor_parallel_size=tensor_parallel_size,
            logprobs_mode="raw_logprobs",
        )
        if kv_cache_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * (1 << 30))
        if on_cpu:  # seeded requests must never be chunk-prefilled (module docstring)
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(max_model_len, _CPU_STEP_TOKENS)
        kwargs.update(llm_kwargs)
        self.model_dir = str(model_dir)
        self.max_model_len = max_model_len
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.llm: Any = LLM(**kwargs)

    def generate(
        self, prompts: list[list[int]], specs: SamplingSpec | list[SamplingSpec]
    ) -> list[Generation]:
        specs = expand_specs(specs, len(prompts))
        if not prompts:
            return []
        params = [self._sampling_params(s) for s in specs]
        outputs = self.llm.generate(
            [{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=False
        )
        return [
            self._to_generation(out.outputs[0], s) for out, s in zip(outputs, specs, strict=True)
        ]

    def prompt_logprobs(self, sequences: list[list[int]], starts: list[int]) -> list[np.ndarray]:
        check_starts(sequences, starts)
        if not sequences:
            return []
        from vllm import SamplingParams

        # One throw-away token per request: vLLM needs max_tokens >= 1.
        params = SamplingParams(
            max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False, flat_logprobs=True
        )
        outputs = self.llm.generate(
            [{"prompt_token_ids": list(s)} for s in sequences], params, use_tqdm=False
        )
        result = []
        for out, seq, start in zip(outputs, sequences, starts, strict=True):
            lps = _pick_logprobs(out.prompt_logprobs, seq, start)
            result.append(np.asarray(lps, dtype=np.float64))
        return result

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is None:
            return
        core = getattr(llm.llm_engine, "engine_core", None)
        if core is not None:
            core.shutdown()
        del llm
        gc.collect()

    def _sampling_params(self, spec: SamplingSpec) -> Any:
        from vllm import SamplingParams

        return SamplingParams(
            n=1,
            max_tokens=spec.max_tokens,
            temperature=spec.temperature,
            top_p=spec.top_p,
            seed=spec.seed,
            stop=list(spec.stop) or None,
            include_stop_str_in_output=True,
            ignore_eos=spec.ignore_eos,
            logprobs=0 if spec.logprobs else None,
            flat_logprobs=True,  # a few flat lists instead of one dict per token
            # vLLM detokenizes only to find stop strings; `text` is decoded here once.
            detokenize=bool(spec.stop),
        )

    def _to_generation(self, out: Any, spec: SamplingSpec) -> Generation:
        if out.finish_reason not in ("stop", "length"):
            raise RuntimeError(f"vLLM request ended with finish_reason={out.finish_reason!r}")
        token_ids = list(out.token_ids)
        logprobs = _pick_logprobs(out.logprobs, token_ids, 0) if spec.logprobs else None
        # vLLM's stop_reason is the stop string, a stop token id, or None (EOS / length).
        stop_reason = out.stop_reason if isinstance(out.stop_reason, str) else None
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        return Generation(token_ids, logprobs, out.finish_reason, stop_reason, text)


def _pick_logprobs(lps: Any, token_ids: list[int], start: int) -> list[float]:
    """The log-prob of token_ids[j] at each position j >= start.

    With logprobs=0 / prompt_logprobs=0 vLLM returns, per position, the actual token
    (plus top-k entries when k > 0, possibly including the same token); we look the
    actual token up by id rather than trusting its position in the entry.
    """
    if lps is None:
        raise RuntimeError("vLLM returned no log-probs although they were requested")
    if len(lps) != len(token_ids):
        raise RuntimeError(f"vLLM returned {len(lps)} log-prob positions for {len(token_ids)}")
    if hasattr(lps, "start_indices"):  # FlatLogprobs
        out = []
        for j in range(start, len(token_ids)):
            lo, hi = lps.start_indices[j], lps.end_indices[j]
            k = lps.token_ids[lo:hi].index(token_ids[j])
            out.append(lps.logprobs[lo + k])
        return out
    return [lps[j][token_ids[j]].logprob for j in range(start, len(token_ids))]
