"""IG scoring of a trajectories table: probes, v per turn boundary, IG per turn, stats.

For every trajectory, v(h) after each turn boundary (spec section 1) with the chosen
scorer, then IG per turn (`prob_diff` or `log_prob_diff`). Several golds: the first,
or the max of v over them (`ig.multi_gold`). A prompt without golds, or a probe that
would not fit in the model's context, gives v = NaN and so "no IG" for the turns
next to it. Writes the SCORED schema: each turn gains `v` (of the context before it)
and `ig` (null on the terminal turn or when not finite).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from a2tgpo.algo import information_gain
from a2tgpo.config import IGConfig
from a2tgpo.data.schemas import SCORED
from a2tgpo.scoring.base import Scorer
from a2tgpo.scoring.probes import ProbeSet, build_probe_sets, probe_tokens

log = logging.getLogger(__name__)


def probe_sets_for(table: pa.Table, tokenizer, ig: IGConfig) -> tuple[list[ProbeSet], list[int]]:
    """The probe sets of every trajectory, and the row each set belongs to."""
    if ig.answer_prefix is None:  # None means "the template's": resolve before scoring
        raise ValueError("ig.answer_prefix is unresolved: pass a2tgpo.envs.prompting.resolved_ig")
    sets: list[ProbeSet] = []
    owners: list[int] = []
    columns = table.select(["token_ids", "turns", "golds"]).to_pydict()
    for row, (tokens, turns, golds) in enumerate(zip(*columns.values(), strict=True)):
        chosen = golds[:1] if ig.multi_gold == "first" else golds
        probes = [probe_tokens(tokenizer, ig.answer_prefix, g) for g in chosen if g.strip()]
        boundaries = [t["start"] for t in turns]
        for s in build_probe_sets(np.asarray(tokens), boundaries, probes):
            sets.append(s)
            owners.append(row)
    return sets, owners


def turn_values(
    table: pa.Table, sets: Sequence[ProbeSet], owners: Sequence[int], values: list[np.ndarray]
) -> list[np.ndarray]:
    """v per turn of every row: the max over the row's gold sets (NaN without any)."""
    turn_counts = [len(t) for t in table.column("turns").to_pylist()]
    out = [np.full(n, np.nan) for n in turn_counts]
    for row, v in zip(owners, values, strict=True):
        out[row] = np.fmax(out[row], v)  # fmax: NaN only where every gold is NaN
    return out


def scored_table(table: pa.Table, v_per_row: list[np.ndarray], mode: str) -> pa.Table:
    """The input rows with `v` and `ig` added to every turn (SCORED schema)."""
    new_turns = []
    for turns, v in zip(table.column("turns").to_pylist(), v_per_row, strict=True):
        ig = information_gain(v, mode).numpy() if len(v) else np.array([])
        new_turns.append(
            [{**t, "v": _finite(v[k]), "ig": _finite(ig[k])} for k, t in enumerate(turns)]
        )
    index = table.schema.get_field_index("turns")
    turns_array = pa.array(new_turns, type=SCORED.field("turns").type)
    return table.set_column(index, SCORED.field("turns"), turns_array).cast(SCORED)


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def score_trajectories(table: pa.Table, scorer: Scorer, tokenizer, ig: IGConfig) -> pa.Table:
    """Score every trajectory of a TRAJECTORIES table; returns the SCORED table."""
    sets, owners = probe_sets_for(table, tokenizer, ig)
    values = scorer.score(sets)
    return scored_table(table, turn_values(table, sets, owners, values), ig.mode)


def ig_stats(table: pa.Table) -> dict[str, Any]:
    """Per turn index: IG count, mean, std; plus the share of turns with IG."""
    by_turn: dict[int, list[float]] = {}
    missing = 0
    for turns in table.column("turns").to_pylist():
        for t in turns[:-1]:
            if t["ig"] is None:
                missing += 1
            else:
                by_turn.setdefault(t["turn"], []).append(t["ig"])
    return {
        "ig_missing": missing,
        "ig_by_turn": {
            str(k): {"count": len(x), "mean": float(np.mean(x)), "std": float(np.std(x))}
            for k, x in sorted(by_turn.items())
        },
    }


def make_scorer(
    kind: str,
    policy_dir: str,
    ig: IGConfig,
    dtype: str = "auto",
    engine=None,
    adapter_dir: str | None = None,
) -> Scorer:
    """A scorer over the policy in `policy_dir`, with the LoRA adapter `adapter_dir` on it
    (naive / packed: HF in-process, the adapter merged; vllm: the engine, which holds it)."""
    if kind == "vllm":
        if engine is None:
            raise ValueError("the vllm scorer needs a running engine (the rollout engine)")
        from a2tgpo.scoring.vllm_scorer import VLLMScorer

        return VLLMScorer(engine)
    import torch

    from a2tgpo.engines.adapters import load_causal_lm
    from a2tgpo.engines.base import torch_dtype
    from a2tgpo.scoring.naive import NaiveScorer
    from a2tgpo.scoring.packed import PackedScorer

    on_gpu = torch.cuda.is_available()
    model = load_causal_lm(
        policy_dir,
        adapter_dir,
        dtype=torch_dtype(dtype, on_gpu=on_gpu),
        attn_implementation="sdpa",
    ).to("cuda" if on_gpu else "cpu")
    cls = {"naive": NaiveScorer, "packed": PackedScorer}[kind]
    return cls(model, ig.tokens_per_batch)
