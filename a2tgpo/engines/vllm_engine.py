"""vLLM offline engine (CPU build here, CUDA build on a cluster).

vllm is imported lazily so the rest of the project imports without it. The `LLM`
object stays reachable as `engine.llm` (weight reloading, done elsewhere, needs it).

vLLM facts this module relies on (checked against vllm 0.32):
  - `LLM` spawns an engine-core child process: scripts must create the engine under
    `if __name__ == "__main__":`, and `close()` shuts that process down explicitly
    (a bare interpreter exit can abort with "terminate called without an active
    exception").
  - `logprobs_mode` is engine-wide. "raw_logprobs": sampled-token log-probs are
    log_softmax of the raw logits, taken before any processor (v1/sample/sampler.py,
    `Sampler.forward`). "processed_logprobs": log_softmax of the logits after
    penalties, temperature, min-p and the top-k / top-p mask (-inf outside the kept
    set), i.e. of the distribution sampled from (`TopKTopPSampler.forward_native` /
    `forward_cpu`; the V2 runner's `Sampler.sample` likewise); an all-greedy batch
    gets log_softmax(logits) untempered. "processed_logits" would return logits, not
    log-probs. Prompt log-probs are raw in every mode (`gpu_model_runner`: "prompt
    tokens skip sampling processors"). Our mode "raw" / "sampled" maps to the first two.
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
from collections.abc import Iterable
from typing import Any

import numpy as np

from a2tgpo.engines.base import (
    VLLM_LOGPROBS_MODES,
    Engine,
    Generation,
    LogprobsMode,
    SamplingSpec,
    check_logprobs_mode,
    check_starts,
    expand_specs,
)
from a2tgpo.engines.vllm_lora import AdapterSlot, lora_engine_kwargs

# vLLM's CPU default for one scheduler step's token budget (offline `LLM`).
_CPU_STEP_TOKENS = 4096


EMBED_TOKENS = "model.embed_tokens.weight"
LM_HEAD = "lm_head.weight"


def _layer_of(name: str) -> str:
    """The module a parameter belongs to for bucketing: `model.layers.<i>` or its parent."""
    parts = name.split(".")
    if "layers" in parts:
        i = parts.index("layers")
        return ".".join(parts[: i + 2])
    return ".".join(parts[:-1])


def _tied_embeddings(model_dir: str | os.PathLike[str]) -> bool:
    import json
    from pathlib import Path

    config = Path(model_dir) / "config.json"
    return config.exists() and bool(json.loads(config.read_text()).get("tie_word_embeddings"))


def _read_tensor(model_dir: str | os.PathLike[str], name: str) -> Any:
    """One tensor from an HF folder's safetensors shards (only that tensor is read)."""
    from pathlib import Path

    from safetensors import safe_open

    for shard in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            if name in f.keys():  # noqa: SIM118 - safe_open has keys(), not __contains__
                return f.get_tensor(name)
    raise KeyError(f"{name} not found in {model_dir}")


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
        logprobs_mode: LogprobsMode = "raw",
        max_lora_rank: int = 0,
        adapter_dir: str | os.PathLike[str] | None = None,
        **llm_kwargs: Any,
    ) -> None:
        """kv_cache_gib None = vLLM's own sizing (GPU: gpu_memory_utilization).

        max_lora_rank > 0 serves LoRA adapters up to that rank on the base weights
        (`set_adapter`; one adapter slot, the policy's); `adapter_dir` is applied at start.

        logprobs_mode: what sampled-token log-probs are (base.py): "raw" or "sampled".

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

        check_logprobs_mode(logprobs_mode)
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
            logprobs_mode=VLLM_LOGPROBS_MODES[logprobs_mode],
        )
        if kv_cache_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * (1 << 30))
        if on_cpu:  # seeded requests must never be chunk-prefilled (module docstring)
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(max_model_len, _CPU_STEP_TOKENS)
        kwargs["worker_extension_cls"] = _EXTENSION
        kwargs |= lora_engine_kwargs(max_lora_rank)
        kwargs.update(llm_kwargs)
        self._extension = kwargs["worker_extension_cls"]
        self.model_dir = str(model_dir)
        self.logprobs_mode = logprobs_mode
        self._config_tied = _tied_embeddings(model_dir)
        self._reload_logs_quiet = False
        self.max_model_len = max_model_len
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.adapter_dir = None
        self._adapter = AdapterSlot(max_lora_rank)
        self.llm: Any = LLM(**kwargs)
        if adapter_dir:
            self.set_adapter(str(adapter_dir))

    def set_adapter(self, adapter_dir: str | None) -> None:
        """Serve `adapter_dir` (None: the base alone) from now on, without restarting."""
        self._adapter.switch(self.llm, adapter_dir)
        self.adapter_dir = adapter_dir

    def generate(
        self, prompts: list[list[int]], specs: SamplingSpec | list[SamplingSpec]
    ) -> list[Generation]:
        specs = expand_specs(specs, len(prompts))
        if not prompts:
            return []
        params = [self._sampling_params(s) for s in specs]
        outputs = self.llm.generate(
            [{"prompt_token_ids": list(p)} for p in prompts],
            params,
            use_tqdm=False,
            lora_request=self._adapter.request,
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
            [{"prompt_token_ids": list(s)} for s in sequences],
            params,
            use_tqdm=False,
            lora_request=self._adapter.request,
        )
        result = []
        for out, seq, start in zip(outputs, sequences, starts, strict=True):
            lps = _pick_logprobs(out.prompt_logprobs, seq, start)
            result.append(np.asarray(lps, dtype=np.float64))
        return result

    def reload_weights(self, model_dir: str | os.PathLike[str]) -> None:
        """Load the weights of `model_dir` (same architecture) into the running engine.

        vLLM reads the new folder's safetensors shard by shard in its workers: nothing
        is gathered in this process. The prefix cache is reset, since cached KV blocks
        belong to the old weights.
        """
        self._quiet_partial_reload_warnings()
        if self._tied:  # first: the full reload below then keeps this head (see `_tied`)
            self._reload_tied_head(model_dir)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(model_dir)})
        self.llm.reset_prefix_cache()
        self.model_dir = str(model_dir)
        if self.adapter_dir is not None:  # an adapter belongs to the base it was trained on
            self.set_adapter(None)

    def _reload_tied_head(self, model_dir: str | os.PathLike[str]) -> None:
        """Load the new embedding again as `lm_head.weight`, from a one-tensor folder."""
        self._load_bucket({LM_HEAD: _read_tensor(model_dir, EMBED_TOKENS)})

    def load_weights(
        self, named_tensors: Iterable[tuple[str, Any]], bucket_bytes: int = 256 << 20
    ) -> int:
        """Stream (name, tensor) pairs into the running engine, one bucket at a time.

        For a trainer that gathers one parameter at a time (ZeRO-3): at most one bucket
        (~bucket_bytes) is held here, never the whole model. Each bucket goes through a
        one-shard safetensors folder in shared memory, which the workers reload in
        place; vLLM 0.32's RPC turns tensors in `weights_iterator` into lists, so
        handing tensors over directly does not work. Returns the number of buckets.
        """
        self._quiet_partial_reload_warnings()
        buckets = 0
        bucket: dict[str, Any] = {}
        size, group = 0, None
        for name, tensor in named_tensors:
            # Cut only between layers: vLLM fuses q/k/v and gate/up, and a layer reloaded
            # from part of its tensors is processed half-loaded (garbage weights).
            if size >= bucket_bytes and _layer_of(name) != group:
                self._load_bucket(bucket)
                buckets, bucket, size = buckets + 1, {}, 0
            group = _layer_of(name)
            bucket[name] = tensor
            if self._tied and name == EMBED_TOKENS:
                bucket[LM_HEAD] = tensor.clone()  # see `_tied`; a copy: safetensors refuses aliases
            size += tensor.numel() * tensor.element_size()
        if bucket:
            self._load_bucket(bucket)
            buckets += 1
        self.llm.reset_prefix_cache()
        self.model_dir = "<streamed>"
        return buckets

    def _quiet_partial_reload_warnings(self) -> None:
        """Silence, in the workers, vLLM's per-layer warnings about a partial reload.

        Every bucket (and the tied head's one-tensor folder) is by design a partial
        checkpoint: vLLM then warns "Failed to load weights" for each layer the bucket
        does not hold, dozens of lines per reload that read like an error. The reloads'
        exactness is checked by tests/engines (log-probs against HF after a reload).
        """
        if not self._reload_logs_quiet:
            if self._extension == _EXTENSION:  # a user's own extension lacks the method
                self.llm.collective_rpc("a2tgpo_quiet_reload_logs")
            self._reload_logs_quiet = True

    def _load_bucket(self, tensors: dict[str, Any]) -> None:
        import tempfile

        from safetensors.torch import save_file

        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        with tempfile.TemporaryDirectory(prefix="a2tgpo-weights-", dir=shm) as folder:
            save_file(
                {k: v.contiguous() for k, v in tensors.items()},
                os.path.join(folder, "model.safetensors"),
            )
            self.llm.collective_rpc("reload_weights", kwargs={"weights_path": folder})

    @property
    def _tied(self) -> bool:
        """Whether the LM head shares the input embeddings' weight.

        A tied checkpoint has no `lm_head.weight`, and vLLM 0.32's layer-wise reload
        then puts the head's *old* tensor back ("ParallelLMHead: Failed to load
        weights"), untying it: log-probs were off by ~1e-2 after one RL step. So the
        embedding is sent again under the head's name.
        """
        return self._config_tied

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
        from vllm.sampling_params import StructuredOutputsParams

        structured = StructuredOutputsParams(regex=spec.regex) if spec.regex else None

        return SamplingParams(
            n=1,
            max_tokens=spec.max_tokens,
            temperature=spec.temperature,
            top_p=spec.top_p,
            top_k=spec.top_k,
            seed=spec.seed,
            stop=list(spec.stop) or None,
            include_stop_str_in_output=True,
            structured_outputs=structured,
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


class ReloadLogExtension:
    """Mixed into vLLM's workers (`worker_extension_cls`): methods callable by name
    through `collective_rpc` (vLLM serializes only names, not functions, by default)."""

    def a2tgpo_quiet_reload_logs(self) -> None:
        """vLLM's reload warnings only at ERROR in this worker process."""
        import logging

        logging.getLogger("vllm.model_executor.model_loader.reload").setLevel(logging.ERROR)


_EXTENSION = f"{__name__}.ReloadLogExtension"


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
