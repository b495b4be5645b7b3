"""transformers fallback engine: a manual batched sampling loop with a KV cache.

Used where vLLM is not available and as the reference the vLLM engine is tested
against. A hand-written loop (rather than `model.generate`) gives what the engine
contract needs and `generate` does not offer together: a per-request seed, stop
strings checked exactly like vLLM (on the decoded text, first occurrence, keeping
the completing token), and the sampled tokens' log-probs in either `logprobs_mode`.

Prompts are left-padded so that every row's next token sits in the last column;
finished rows keep being fed a pad token (their outputs are ignored) so the batch
stays rectangular. Sampling draws one uniform number per token from the row's own
`torch.Generator` (seeded per request, else the engine's) and inverts the CDF, so a
row's samples do not depend on which other rows share its batch. Top-k then top-p
cut the tempered distribution as vLLM does (`apply_top_k_top_p`: ties at the k-th
value are kept; top-p on the top-k-renormalized probabilities).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from a2tgpo.batching import token_budget_batches
from a2tgpo.engines.adapters import load_causal_lm
from a2tgpo.engines.base import (
    Engine,
    Generation,
    LogprobsMode,
    SamplingSpec,
    check_logprobs_mode,
    check_starts,
    expand_specs,
    torch_dtype,
)


class HFEngine(Engine):
    """A policy run by transformers in this process."""

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        dtype: str = "float32",
        max_model_len: int | None = None,
        seed: int = 0,
        device: str | None = None,
        max_batch_size: int = 256,
        tokens_per_batch: int = 8192,
        attn_implementation: str = "sdpa",
        logprobs_mode: LogprobsMode = "raw",
        adapter_dir: str | os.PathLike[str] | None = None,
        max_lora_rank: int = 0,
    ) -> None:
        """max_model_len None = the model's max_position_embeddings.

        adapter_dir: a LoRA adapter merged into the weights at load (any rank:
        max_lora_rank, which sizes vLLM's adapter slots, is not needed here).

        logprobs_mode: what sampled-token log-probs are (base.py): "raw" or "sampled".

        max_batch_size bounds the rows generated together; tokens_per_batch bounds
        the padded tokens of one `prompt_logprobs` forward (its logits are B x L x V).
        """
        import torch
        from transformers import AutoTokenizer

        check_logprobs_mode(logprobs_mode)
        self._torch = torch
        self.logprobs_mode = logprobs_mode
        self.model_dir = str(model_dir)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.adapter_dir = str(adapter_dir) if adapter_dir else None
        self.model: Any = load_causal_lm(
            model_dir,
            adapter_dir,
            dtype=torch_dtype(dtype),
            attn_implementation=attn_implementation,
        )
        self.model.to(self.device).eval()
        self.max_model_len = max_model_len or self.model.config.max_position_embeddings
        self.max_batch_size = max_batch_size
        self.tokens_per_batch = tokens_per_batch
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = min(self.eos_ids)
        self._rng = torch.Generator(device="cpu").manual_seed(seed)

    def generate(
        self, prompts: list[list[int]], specs: SamplingSpec | list[SamplingSpec]
    ) -> list[Generation]:
        if any(s.regex for s in ([specs] if isinstance(specs, SamplingSpec) else specs)):
            raise ValueError("the hf engine does not support regex-constrained sampling; use vllm")
        specs = expand_specs(specs, len(prompts))
        for i, p in enumerate(prompts):
            if not 1 <= len(p) < self.max_model_len:
                raise ValueError(
                    f"prompt {i} has {len(p)} tokens; max_model_len is {self.max_model_len}"
                )
        out: list[Generation] = []
        for lo in range(0, len(prompts), self.max_batch_size):
            hi = lo + self.max_batch_size
            out.extend(self._generate_batch(prompts[lo:hi], specs[lo:hi]))
        return out

    def prompt_logprobs(self, sequences: list[list[int]], starts: list[int]) -> list[np.ndarray]:
        check_starts(sequences, starts)
        torch = self._torch
        result: list[np.ndarray | None] = [None] * len(sequences)
        # Longest first, so each batch pads little and its size follows the budget.
        lengths = [len(s) for s in sequences]
        for batch in token_budget_batches(lengths, self.tokens_per_batch, longest_first=True):
            ids, mask = _pad([sequences[i] for i in batch], self.pad_id, left=False)
            with torch.inference_mode():
                logits = self.model(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device)
                ).logits
            for row, i in enumerate(batch):
                seq, start = sequences[i], starts[i]
                # Position j-1's logits predict token j.
                logp = torch.log_softmax(logits[row, start - 1 : len(seq) - 1].float(), dim=-1)
                target = torch.tensor(seq[start:], device=logp.device).unsqueeze(-1)
                picked = logp.gather(-1, target).squeeze(-1)
                result[i] = picked.double().cpu().numpy()
        return result  # type: ignore[return-value]

    def reload_weights(self, model_dir: str | os.PathLike[str]) -> None:
        """Load the weights of `model_dir` (same architecture) into the loaded model (any
        adapter is dropped with the old weights)."""
        from transformers import AutoModelForCausalLM

        fresh = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=self.model.dtype)
        self.model.load_state_dict(fresh.state_dict())
        self.model_dir = str(model_dir)
        self.adapter_dir = None

    def set_adapter(self, adapter_dir: str | None) -> None:
        """The base weights again, with `adapter_dir` merged in (a merge cannot be undone
        exactly in floating point, so the base is reloaded first)."""
        fresh = load_causal_lm(self.model_dir, adapter_dir, dtype=self.model.dtype)
        self.model.load_state_dict(fresh.state_dict())
        self.adapter_dir = str(adapter_dir) if adapter_dir else None

    def close(self) -> None:
        self.model = None

    def _generate_batch(
        self, prompts: list[list[int]], specs: list[SamplingSpec]
    ) -> list[Generation]:
        torch = self._torch
        n = len(prompts)
        budgets = [
            min(s.max_tokens, self.max_model_len - len(p))
            for p, s in zip(prompts, specs, strict=True)
        ]
        gens = [_Row(s, self._row_generator(s)) for s in specs]
        ids, mask = _pad(prompts, self.pad_id, left=True)
        ids, mask = ids.to(self.device), mask.to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=pos,
                use_cache=True,
                logits_to_keep=1,
            )
            next_pos = pos[:, -1:] + 1
            for _ in range(max(budgets)):
                tokens, logps = self._sample(out.logits[:, -1, :].float(), gens)
                for i, row in enumerate(gens):
                    if not row.done:
                        self._advance(row, tokens[i], logps[i], budgets[i])
                if all(row.done for row in gens):
                    break
                feed = [row.token_ids[-1] if not row.done else self.pad_id for row in gens]
                feed_t = torch.tensor(feed, device=self.device).unsqueeze(-1)
                mask = torch.cat([mask, mask.new_ones(n, 1)], dim=-1)
                out = self.model(
                    input_ids=feed_t,
                    attention_mask=mask,
                    position_ids=next_pos,
                    past_key_values=out.past_key_values,
                    use_cache=True,
                )
                next_pos = next_pos + 1
        return [row.to_generation(self.tokenizer) for row in gens]

    def _row_generator(self, spec: SamplingSpec) -> Any:
        if spec.seed is None:
            return self._rng
        return self._torch.Generator(device="cpu").manual_seed(spec.seed)

    def _sample(self, logits: Any, rows: list[_Row]) -> tuple[list[int], list[float]]:
        """One token per row, and its log-prob in the engine's `logprobs_mode`."""
        torch = self._torch
        raw_logp = torch.log_softmax(logits, dim=-1)
        temps = torch.tensor([r.spec.temperature for r in rows], device=logits.device)
        greedy = temps == 0
        probs = torch.softmax(logits / temps.clamp(min=1e-6).unsqueeze(-1), dim=-1)
        top_k = torch.tensor([r.spec.top_k for r in rows], device=logits.device)
        if bool((top_k > 0).any()):
            probs = _top_k(probs, top_k)
        top_p = torch.tensor([r.spec.top_p for r in rows], device=logits.device)
        if bool((top_p < 1).any()):
            probs = _nucleus(probs, top_p)
        # One uniform per row from the row's own generator, drawn even for finished or
        # greedy rows, so a seeded row's stream never depends on its batch-mates.
        u = torch.cat([torch.rand(1, generator=r.generator) for r in rows]).to(logits.device)
        cdf = probs.double().cumsum(-1)
        sampled = torch.searchsorted(cdf, (u.double() * cdf[:, -1]).unsqueeze(-1), right=True)
        sampled = sampled.squeeze(-1).clamp(max=logits.shape[-1] - 1)
        tokens = torch.where(greedy, logits.argmax(-1), sampled)
        logps = raw_logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        if self.logprobs_mode == "sampled":  # greedy rows keep raw log-probs, as in vLLM
            cut = (top_k > 0) | (top_p < 1)
            sampled_logp = _sampled_logprob(logits, temps, probs, tokens, cut)
            logps = torch.where(greedy, logps, sampled_logp)
        return tokens.tolist(), logps.tolist()

    def _advance(self, row: _Row, token: int, logp: float, budget: int) -> None:
        row.token_ids.append(token)
        row.logprobs.append(logp)
        if token in self.eos_ids and not row.spec.ignore_eos:
            row.finish("stop")
        elif row.spec.stop and (hit := self._first_stop(row)) is not None:
            row.finish("stop", hit)
        elif len(row.token_ids) >= budget:
            row.finish("length")

    def _first_stop(self, row: _Row) -> str | None:
        """The stop string whose first occurrence ends earliest in the text, if any.

        Checked after every token, so a hit always ends inside the newest token.
        """
        text = self.tokenizer.decode(row.token_ids, skip_special_tokens=True)
        hits = [(text.find(s) + len(s), k, s) for k, s in enumerate(row.spec.stop) if s in text]
        return min(hits)[2] if hits else None


class _Row:
    """Generation state of one request."""

    def __init__(self, spec: SamplingSpec, generator: Any) -> None:
        self.spec = spec
        self.generator = generator
        self.token_ids: list[int] = []
        self.logprobs: list[float] = []
        self.done = False
        self.finish_reason = ""
        self.stop_reason: str | None = None

    def finish(self, reason: str, stop_reason: str | None = None) -> None:
        self.done, self.finish_reason, self.stop_reason = True, reason, stop_reason

    def to_generation(self, tokenizer: Any) -> Generation:
        text = tokenizer.decode(self.token_ids, skip_special_tokens=True)
        logprobs = self.logprobs if self.spec.logprobs else None
        return Generation(self.token_ids, logprobs, self.finish_reason, self.stop_reason, text)


def _sampled_logprob(logits: Any, temps: Any, probs: Any, tokens: Any, cut: Any) -> Any:
    """log p(token) under the distribution sampled, per row.

    Uncut rows: log_softmax(logits / T), exactly the raw log-probs at T = 1. Rows cut
    by top-k / top-p: `probs` (tempered, cut) renormalized, in float64 so the log of a
    float32 probability ratio is good to ~1e-7.
    """
    import torch

    index = tokens.unsqueeze(-1)
    tempered = torch.log_softmax(logits / temps.clamp(min=1e-6).unsqueeze(-1), dim=-1)
    kept = probs.double()
    renormalized = (kept.gather(-1, index).squeeze(-1) / kept.sum(-1)).log()
    return torch.where(cut, renormalized.to(logits.dtype), tempered.gather(-1, index).squeeze(-1))


def _top_k(probs: Any, top_k: Any) -> Any:
    """Zero the tokens below each row's k-th largest probability and renormalize (k 0 = off).

    Ties with the k-th value are kept, like vLLM's mask (`logits < kth` is dropped).
    """
    import torch

    on = (top_k > 0).unsqueeze(-1)
    k = top_k.clamp(min=1, max=probs.shape[-1])
    kth = probs.topk(int(k.max()), dim=-1).values.gather(-1, (k - 1).unsqueeze(-1))
    probs = probs.masked_fill((probs < kth) & on, 0.0)
    # Rows without top-k are divided by exactly 1: their samples stay bit-identical.
    return probs / torch.where(on, probs.sum(-1, keepdim=True), 1.0)


def _nucleus(probs: Any, top_p: Any) -> Any:
    """Zero all but the smallest top set of tokens whose mass reaches top_p (per row)."""
    import torch

    sorted_p, idx = probs.sort(dim=-1, descending=True)
    mass_before = sorted_p.cumsum(-1) - sorted_p
    sorted_p = sorted_p.masked_fill(mass_before >= top_p.unsqueeze(-1), 0.0)
    return torch.zeros_like(probs).scatter(-1, idx, sorted_p)


def _pad(seqs: list[list[int]], pad_id: int, *, left: bool) -> tuple[Any, Any]:
    """(ids, attention_mask) as [B, max_len] long tensors."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        span = slice(width - len(s), width) if left else slice(0, len(s))
        ids[i, span] = torch.tensor(s, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """EOS ids as vLLM sees them: the tokenizer's eos plus generation_config's."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    gen_eos = getattr(model.generation_config, "eos_token_id", None)
    if gen_eos is not None:
        ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
    if not ids:
        raise ValueError("the model defines no EOS token")
    return ids
