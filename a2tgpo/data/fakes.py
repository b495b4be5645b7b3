"""Synthetic stage datasets for tests and benchmarks (valid by construction).

`fake_trajectory_batches` builds trajectories with numpy, a batch at a time, so a
benchmark can stream 100k x 2k-token rows without holding them: each row is a
prompt of 16..64 tokens followed by `turns` turns, each a generated span then an
observation (none after the terminal turn), loss_mask 1 exactly on generated spans.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from a2tgpo.data.schemas import PROMPTS, schema_for

VOCAB = 151_000  # Qwen-sized vocabulary: token ids need the full int32 width


def fake_prompts(rows: int, *, data_source: str = "synthetic", split: str = "train") -> pa.Table:
    """`rows` prompts in the PROMPTS schema."""
    ids = [f"{data_source}-{split}-{i}" for i in range(rows)]
    questions = [f"Who is person {i}?" for i in range(rows)]
    return pa.Table.from_pydict(
        {
            "prompt_id": ids,
            "messages": [[{"role": "user", "content": q}] for q in questions],
            "golds": [[f"answer {i}", f"alias {i}"] for i in range(rows)],
            "data_source": [data_source] * rows,
            "split": [split] * rows,
            "question": questions,
            "meta": [None] * rows,
        },
        schema=PROMPTS,
    )


def fake_trajectories(rows: int, **kwargs) -> pa.Table:
    """All of `fake_trajectory_batches` as one table."""
    name = kwargs.get("schema_name", "trajectories")
    return pa.Table.from_batches(list(fake_trajectory_batches(rows, **kwargs)), schema_for(name))


def fake_trajectory_batches(
    rows: int,
    *,
    tokens: int = 2048,
    turns: int = 3,
    schema_name: str = "trajectories",
    batch_rows: int = 1024,
    seed: int = 0,
    logprobs: bool = True,
    vocab: int = VOCAB,
) -> Iterator[pa.RecordBatch]:
    """Batches of `rows` trajectories of about `tokens` tokens (up to 1/8 shorter);
    token ids below `vocab` (a tiny model's vocabulary, for training tests)."""
    rng = np.random.default_rng(seed)
    schema = schema_for(schema_name)
    for first in range(0, rows, batch_rows):
        n = min(batch_rows, rows - first)
        yield _batch(rng, schema, first, n, tokens, turns, logprobs, vocab)


def _batch(
    rng,
    schema: pa.Schema,
    first: int,
    n: int,
    tokens: int,
    turns: int,
    logprobs: bool,
    vocab: int = VOCAB,
):
    length = tokens - rng.integers(0, tokens // 8 + 1, n)
    prompt = np.minimum(rng.integers(16, 65, n), length // 4)
    offsets = np.concatenate([[0], np.cumsum(length)]).astype(np.int32)
    spans = _spans(prompt, length, turns)
    mask = _loss_mask(offsets, spans["start"], spans["end"])
    token_ids = rng.integers(0, vocab, int(offsets[-1]), dtype=np.int32)
    columns = {
        "prompt_id": pa.array([f"p{(first + i) // 8:07d}" for i in range(n)]),
        "trajectory_id": pa.array([f"t{first + i:08d}" for i in range(n)]),
        "sample_index": pa.array((np.arange(first, first + n) % 8).astype(np.int32)),
        "policy_version": pa.array(np.zeros(n, np.int64)),
        "data_source": pa.array(["synthetic"] * n),
        "golds": pa.array([["gold"]] * n, pa.list_(pa.string())),
        "token_ids": _list(offsets, token_ids),
        "loss_mask": _list(offsets, mask),
        "prompt_length": pa.array(prompt.astype(np.int32)),
        "turns": _turns(schema, spans, n, turns, rng),
        "answer": pa.array(["gold"] * n),
        "outcome": pa.array(rng.integers(0, 2, n).astype(np.float64)),
        "em": pa.array(np.zeros(n)),
        "f1": pa.array(np.zeros(n)),
        "finish_reason": pa.array(["answer"] * n),
        "sampling": pa.array(
            [{"temperature": 1.0, "top_p": 1.0, "max_turn_tokens": 512, "seed": first}] * n,
            schema.field("sampling").type,
        ),
        "rollout_logprobs": (
            _list(offsets, -rng.standard_exponential(len(mask), np.float32) * mask)
            if logprobs
            else pa.nulls(n, pa.list_(pa.float32()))
        ),
    }
    columns["staleness"] = pa.array(np.zeros(n, np.int32))
    arrays = [columns[f.name].cast(f.type) for f in schema]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _spans(prompt: np.ndarray, length: np.ndarray, turns: int) -> dict[str, np.ndarray]:
    """Turn spans, shape (rows, turns): each turn 2/3 generated, 1/3 observation."""
    seg = (length - prompt) // turns
    k = np.arange(turns)[None, :]
    start = prompt[:, None] + k * seg[:, None]
    end = start + (2 * seg // 3)[:, None]
    obs_end = start + seg[:, None]
    end[:, -1] = length  # the terminal turn runs to the end and has no observation
    obs_end[:, -1] = length
    return {"start": start, "end": end, "obs_start": end.copy(), "obs_end": obs_end}


def _loss_mask(offsets: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    # +1 at each generated span's start, -1 at its end, then a running sum.
    diff = np.zeros(int(offsets[-1]) + 1, np.int8)
    np.add.at(diff, (offsets[:-1, None] + start).ravel(), 1)
    np.add.at(diff, (offsets[:-1, None] + end).ravel(), -1)
    return np.cumsum(diff[:-1], dtype=np.int8)


def _turns(schema: pa.Schema, spans, n: int, turns: int, rng) -> pa.Array:
    list_type = schema.field("turns").type
    struct_type = list_type.value_type
    count = n * turns
    last = np.tile(np.arange(turns) == turns - 1, n)
    v = rng.normal(-2.0, 0.5, count)
    ig = np.where(last, np.nan, np.roll(np.exp(v), -1) - np.exp(v))
    values = {
        "turn": np.tile(np.arange(turns, dtype=np.int16), n),
        **{name: spans[name].ravel().astype(np.int32) for name in spans},
        "action": np.where(last, "answer", "search"),
        "query": pa.array(np.where(last, None, "query"), pa.string()),
        "v": v,
        "ig": pa.array(ig, pa.float64(), from_pandas=True),  # NaN -> null on the terminal turn
        "ig_norm": rng.normal(0, 1, count),
        "advantage": rng.normal(0, 1, count),
        "eps_low": np.full(count, 0.2),
        "eps_high": np.full(count, 0.2),
    }
    children = [pa.array(values[f.name]).cast(f.type) for f in struct_type]
    struct = pa.StructArray.from_arrays(children, fields=list(struct_type))
    return pa.ListArray.from_arrays(
        pa.array(np.arange(0, count + 1, turns, dtype=np.int32)), struct, type=list_type
    )


def _list(offsets: np.ndarray, values: np.ndarray) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
