"""Loaders of QA datasets into the PROMPTS schema.

Formats (reads a local file, or any store URI when given a `Storage`):

- verl / Search-R1 parquet: `data_source`, `prompt` (list of {content, role}),
  `reward_model` ({ground_truth, style}; ground_truth is gold answers joined by
  `<|answer_split|>`, or Search-R1's {"target": [...]}), `extra_info` ({index, split}).
  prompt_id = f"{data_source}-{split}-{index}"; `messages` is the prompt as given;
  `question` is the last user message, minus a Search-R1-style instruction template
  (the text after its last "Question:") when there is one.
- FlashRAG jsonl or parquet: `id`, `question`, `golden_answers` (list of strings),
  optional `metadata` (kept as JSON in `meta`). data_source defaults to the file's
  folder name and split to its stem (FlashRAG ships `{dataset}/{split}.jsonl`).

A bad row (no question, no gold answer, wrong types, duplicate id, a question or gold
answers over `max_question_chars` / `max_gold_chars`) raises `LoaderError` naming the
file and row; with on_error="skip" it is left out, logged, and described in the
`skipped` list when one is passed. Rows can be filtered by data source and cut to
`limit` rows: the first ones, or a sample drawn with `seed` (kept in file order). A
load that leaves no prompt at all raises `LoaderError` saying why.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from a2tgpo.data.schemas import PROMPTS
from a2tgpo.data.storage import Storage
from a2tgpo.data.validate import Validator
from a2tgpo.envs.rewards import split_golds
from a2tgpo.errors import InputError

log = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]
QUESTION_MARKER = "Question:"
# The defaults of env.max_question_chars / env.max_gold_chars (a2tgpo.config).
MAX_QUESTION_CHARS = 16_384
MAX_GOLD_CHARS = 131_072


class LoaderError(InputError):
    """A row of a source dataset cannot become a prompt (row None: the whole file)."""

    def __init__(self, path: str, row: int | None, problem: str) -> None:
        self.path, self.row, self.problem = path, row, problem
        super().__init__(f"{path}: {problem}" if row is None else f"{path}, row {row}: {problem}")


class _BadRow(Exception):
    pass


def load_prompts(
    path: str | os.PathLike[str], *, storage: Storage | None = None, **options: Any
) -> pa.Table:
    """Load a verl parquet or a FlashRAG jsonl / parquet file, told apart by its columns."""
    path = os.fspath(path)
    if path.endswith((".jsonl", ".json")):
        return load_flashrag(path, storage=storage, **options)
    names = _parquet_columns(path, storage)
    if {"prompt", "reward_model"} <= set(names):
        return load_verl(path, storage=storage, **options)
    if {"question", "golden_answers"} <= set(names):
        return load_flashrag(path, storage=storage, **options)
    raise ValueError(f"{path}: neither verl (prompt, reward_model) nor FlashRAG columns")


def load_verl(
    path: str | os.PathLike[str],
    *,
    storage: Storage | None = None,
    split: str | None = None,
    data_sources: Sequence[str] | None = None,
    limit: int | None = None,
    seed: int | None = None,
    on_error: OnError = "raise",
    skipped: list[str] | None = None,
    max_question_chars: int = MAX_QUESTION_CHARS,
    max_gold_chars: int = MAX_GOLD_CHARS,
) -> pa.Table:
    """Prompts from a verl / Search-R1 parquet file (see the module docstring).

    The split is each row's extra_info.split (the file's stem where missing) unless
    `split` overrides it: the IGPO test.parquet labels all its rows "dev".
    """
    path = os.fspath(path)
    rows = _read_parquet(path, storage).to_pylist()
    stem = PurePosixPath(path).stem
    return _build(
        path,
        rows,
        lambda i, r: _verl_row(i, r, stem, split),
        lambda r: r.get("data_source") if isinstance(r, dict) else None,
        _Filter(data_sources, limit, seed, on_error, skipped, max_question_chars, max_gold_chars),
    )


def load_flashrag(
    path: str | os.PathLike[str],
    *,
    storage: Storage | None = None,
    data_source: str | None = None,
    split: str | None = None,
    data_sources: Sequence[str] | None = None,
    limit: int | None = None,
    seed: int | None = None,
    on_error: OnError = "raise",
    skipped: list[str] | None = None,
    max_question_chars: int = MAX_QUESTION_CHARS,
    max_gold_chars: int = MAX_GOLD_CHARS,
) -> pa.Table:
    """Prompts from a FlashRAG jsonl or parquet file (see the module docstring)."""
    path = os.fspath(path)
    where = PurePosixPath(path)
    source = data_source or where.parent.name or where.stem
    split = split or where.stem
    if path.endswith(".parquet"):
        rows: list[Any] = _read_parquet(path, storage).to_pylist()
    else:
        rows = _read_jsonl(path, storage)
    return _build(
        path,
        rows,
        lambda i, r: _flashrag_row(i, r, source, split),
        lambda r: source,
        _Filter(data_sources, limit, seed, on_error, skipped, max_question_chars, max_gold_chars),
    )


@dataclass
class _Filter:
    data_sources: Sequence[str] | None
    limit: int | None
    seed: int | None
    on_error: OnError
    skipped: list[str] | None
    max_question_chars: int = MAX_QUESTION_CHARS
    max_gold_chars: int = MAX_GOLD_CHARS


def _build(
    path: str,
    rows: list[Any],
    parse: Callable[[int, Any], dict[str, Any]],
    source_of: Callable[[Any], str | None],
    options: _Filter,
) -> pa.Table:
    """Parse rows, raise on or drop bad ones, filter, sample: a PROMPTS table."""
    if options.on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {options.on_error!r}")
    wanted = set(options.data_sources) if options.data_sources else None
    prompts: list[dict[str, Any]] = []
    first_row: dict[str, int] = {}
    bad: list[str] = []
    for index, raw in enumerate(rows):
        if wanted is not None and source_of(raw) not in wanted:
            continue
        try:
            prompt = parse(index, raw)
            _check_size(prompt, options)
            if prompt["prompt_id"] in first_row:
                earlier = first_row[prompt["prompt_id"]]
                raise _BadRow(f"duplicate prompt_id {prompt['prompt_id']!r} (row {earlier})")
        except _BadRow as e:
            if options.on_error == "raise":
                raise LoaderError(path, index, str(e)) from None
            bad.append(f"row {index}: {e}")
            continue
        first_row[prompt["prompt_id"]] = index
        prompts.append(prompt)
    if bad:
        log.warning("%s: skipped %d bad rows (first: %s)", path, len(bad), bad[0])
        if options.skipped is not None:
            options.skipped.extend(bad)
    prompts = _sample(prompts, options.limit, options.seed)
    if not prompts:  # refused here, before a pool is committed or a tokenizer trained
        raise LoaderError(path, None, f"no prompts ({_why_empty(rows, bad, wanted)})")
    table = pa.Table.from_pylist(prompts, schema=PROMPTS)
    validate = Validator(PROMPTS)  # a safety net: the parsers above should never fail it
    for batch in table.to_batches():
        validate(batch)
    return table


def _check_size(prompt: dict[str, Any], options: _Filter) -> None:
    """Caps on what a row may hold, counted in characters before anything tokenizes it."""
    chars = sum(len(m["content"]) for m in prompt["messages"])
    if chars > options.max_question_chars:
        raise _BadRow(
            f"question has {chars} characters; the limit is {options.max_question_chars} "
            "(env.max_question_chars)"
        )
    chars = sum(len(g) for g in prompt["golds"])
    if chars > options.max_gold_chars:
        raise _BadRow(
            f"gold answers have {chars} characters; the limit is {options.max_gold_chars} "
            "(env.max_gold_chars)"
        )


def _why_empty(rows: list[Any], bad: list[str], wanted: set[str] | None) -> str:
    if not rows:
        return "the file has no rows"
    if len(bad) == len(rows):
        return f"all {len(bad)} rows were bad; first: {bad[0]}"
    if wanted is not None:
        return f"no {'good ' if bad else ''}row of data sources {sorted(wanted)}"
    return "limit=0"


def _sample(
    prompts: list[dict[str, Any]], limit: int | None, seed: int | None
) -> list[dict[str, Any]]:
    if limit is None or limit >= len(prompts):
        return prompts
    if seed is None:
        return prompts[:limit]
    keep = sorted(random.Random(seed).sample(range(len(prompts)), limit))
    return [prompts[i] for i in keep]


def _verl_row(index: int, row: Any, stem: str, split: str | None) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise _BadRow("not a record")
    source = _text(row.get("data_source"), "data_source")
    messages = row.get("prompt")
    if not isinstance(messages, list) or not messages:
        raise _BadRow("prompt must be a non-empty list of {role, content}")
    for m in messages:
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("content"), str)
        ):
            raise _BadRow("prompt messages need string role and content")
    user = [m["content"] for m in messages if m["role"] == "user"]
    if not user:
        raise _BadRow("prompt has no user message")
    extra = row.get("extra_info") or {}
    split = split or extra.get("split") or stem
    source_index = extra.get("index", index)
    reward = row.get("reward_model")
    if not isinstance(reward, dict):
        raise _BadRow("reward_model must be a struct with ground_truth")
    meta = {"index": source_index, "ability": row.get("ability"), "style": reward.get("style")}
    return {
        "prompt_id": f"{source}-{split}-{source_index}",
        "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        "golds": _golds(reward.get("ground_truth")),
        "data_source": source,
        "split": str(split),
        "question": _question(user[-1]),
        "meta": json.dumps({k: v for k, v in meta.items() if v is not None}),
    }


def _flashrag_row(index: int, row: Any, source: str, split: str) -> dict[str, Any]:
    if isinstance(row, _Unparsable):
        raise _BadRow(str(row))
    if not isinstance(row, dict):
        raise _BadRow(f"not a JSON object: {str(row)[:80]!r}")
    row_id = row.get("id")
    if not isinstance(row_id, str | int) or isinstance(row_id, bool) or row_id == "":
        raise _BadRow("id must be a non-empty string or an integer")
    question = _text(row.get("question"), "question")
    answers = row.get("golden_answers")
    if not isinstance(answers, list):
        raise _BadRow("golden_answers must be a list of strings")
    metadata = row.get("metadata")
    return {
        "prompt_id": f"{source}-{split}-{row_id}",
        "messages": [{"role": "user", "content": question}],
        "golds": _golds(answers),
        "data_source": source,
        "split": split,
        "question": question,
        "meta": json.dumps(metadata) if metadata else None,
    }


def _golds(value: Any) -> list[str]:
    if isinstance(value, dict) and "target" in value:  # Search-R1: {"target": [...]}
        value = value["target"]
    if not isinstance(value, str) and not (
        isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
    ):
        raise _BadRow("gold answers must be strings")
    try:
        return split_golds(value)  # the reward's rule, so both read a dataset's golds alike
    except ValueError:
        raise _BadRow("no gold answer") from None


def _question(content: str) -> str:
    # Search-R1 puts the question after an instruction: "... Question: {question}\n".
    at = content.rfind(QUESTION_MARKER)
    if at >= 0 and content[at + len(QUESTION_MARKER) :].strip():
        return content[at + len(QUESTION_MARKER) :].strip()
    question = content.strip()
    if not question:
        raise _BadRow("empty question")
    return question


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _BadRow(f"{name} must be a non-empty string")
    return value.strip()


def _parquet_columns(path: str, storage: Storage | None) -> list[str]:
    if storage is None:
        return pq.read_schema(path).names
    with storage.open(path) as f:
        return pq.read_schema(f).names


def _read_parquet(path: str, storage: Storage | None) -> pa.Table:
    if storage is None:
        return pq.read_table(path)
    with storage.open(path) as f:
        return pq.read_table(f)


def _read_jsonl(path: str, storage: Storage | None) -> list[Any]:
    if storage is None:
        with open(path, "rb") as f:
            data = f.read()
    else:
        data = storage.read_bytes(path)
    rows: list[Any] = []  # one per non-blank line
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            rows.append(_Unparsable(f"line {number} is not JSON: {e}"))
    return rows


class _Unparsable(str):
    """A jsonl line that is not JSON: a bad row, reported where it stands."""
