"""Validation of stage datasets on write, batch by batch, against the canonical schemas.

`Validator(schema)` takes the record batches of one dataset in order and returns each
conformed to the canonical schema (column order, exact types: ints and floats are
widened or narrowed only when every value fits). It raises `DatasetValidationError`
naming the column, the row (0-based, over the whole dataset) and the row's
trajectory_id / prompt_id on: a missing or unexpected column, a wrong type, a null in a
non-nullable field (nested ones included), a duplicate key, and for trajectory
datasets (see `schemas.py` for the turn conventions):

- loss_mask / rollout_logprobs (when present) not as long as token_ids, a null token,
  a loss_mask value other than 0 / 1, prompt_length outside [0, len(token_ids)];
- finish_reason not in FINISH_REASONS, a turn action not in TURN_ACTIONS;
- turns not numbered 0..T-1 in order; a turn span not ordered as
  prompt_length <= start <= end <= obs_start <= obs_end <= len(token_ids), or starting
  before the previous turn's observation ends.

Every check is a pyarrow / numpy operation over whole columns or list offsets; only
the duplicate-key check walks rows (one set lookup per row, none per token).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from a2tgpo.data.errors import DatasetValidationError
from a2tgpo.data.schemas import FINISH_REASONS, TURN_ACTIONS

_KEY_COLUMNS = ("trajectory_id", "prompt_id")  # the first one a schema has is its key


class Validator:
    """Validates the batches of one dataset, in order (row indices and keys carry over)."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.key_column = next((k for k in _KEY_COLUMNS if k in schema.names), None)
        self.rows_seen = 0
        self._first_row_of_key: dict[str, int] = {}

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        _check_columns(batch.schema, self.schema)
        for field in self.schema:
            _check_type(batch.column(field.name).type, field)
            self._check_nulls(batch, batch.column(field.name), field, field.name, None)
        batch = _cast(batch, self.schema)
        if "turns" in self.schema.names and "token_ids" in self.schema.names:
            self._check_trajectories(batch)
        if self.key_column:
            self._check_unique(batch)
        self.rows_seen += batch.num_rows
        return batch

    # ---- errors --------------------------------------------------------------------

    def error(self, batch: pa.RecordBatch, column: str, row: int, problem: str) -> None:
        key = batch.column(self.key_column)[row].as_py() if self.key_column else None
        raise DatasetValidationError(
            column, problem, row=self.rows_seen + row, key=key, key_column=self.key_column
        )

    def _fail_first(self, batch: pa.RecordBatch, column: str, bad: np.ndarray, problem) -> None:
        """Raise for the first row where `bad` holds; `problem(row)` describes it."""
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            self.error(batch, column, row, problem(row))

    # ---- checks --------------------------------------------------------------------

    def _check_nulls(self, batch, arr: pa.Array, field: pa.Field, path: str, rows) -> None:
        """Nulls in non-nullable fields, recursing into structs and lists; `rows` maps
        positions of `arr` to row indices (None = identity)."""
        if not field.nullable and arr.null_count:
            first = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
            self.error(batch, path, first if rows is None else int(rows[first]), "null value")
        kind = field.type
        if pa.types.is_struct(arr.type) and pa.types.is_struct(kind) and _has_required(kind):
            children = arr.flatten()  # parent nulls merged in: a null struct fails too
            for child in kind:
                index = arr.type.get_field_index(child.name)
                self._check_nulls(batch, children[index], child, f"{path}.{child.name}", rows)
        elif (
            _is_list(arr.type)
            and _is_list(kind)
            and _has_required(kind.value_type, kind.value_field.nullable)
        ):
            parents = pc.list_parent_indices(arr).to_numpy()
            nested_rows = parents if rows is None else rows[parents]
            self._check_nulls(batch, arr.flatten(), kind.value_field, path, nested_rows)

    def _check_unique(self, batch: pa.RecordBatch) -> None:
        seen = self._first_row_of_key
        for i, key in enumerate(batch.column(self.key_column).to_pylist()):
            if key in seen:
                self.error(batch, self.key_column, i, f"duplicate (first at row {seen[key]})")
            seen[key] = self.rows_seen + i

    def _check_trajectories(self, batch: pa.RecordBatch) -> None:
        tokens = batch.column("token_ids")
        n_tok = pc.list_value_length(tokens).to_numpy(zero_copy_only=False)
        self._check_token_lists(batch, n_tok)
        finish = pc.is_in(batch.column("finish_reason"), value_set=pa.array(FINISH_REASONS))
        self._fail_first(
            batch,
            "finish_reason",
            ~finish.to_numpy(zero_copy_only=False),
            lambda r: f"{batch.column('finish_reason')[r].as_py()!r} not in {FINISH_REASONS}",
        )
        prompt_len = batch.column("prompt_length").to_numpy(zero_copy_only=False)
        self._fail_first(
            batch,
            "prompt_length",
            (prompt_len < 0) | (prompt_len > n_tok),
            lambda r: f"{prompt_len[r]} outside [0, len(token_ids)={n_tok[r]}]",
        )
        self._check_turns(batch, n_tok, prompt_len)

    def _check_token_lists(self, batch: pa.RecordBatch, n_tok: np.ndarray) -> None:
        for name in ("loss_mask", "rollout_logprobs"):
            if name not in batch.schema.names:  # rollout_logprobs is optional
                continue
            col = batch.column(name)
            length = pc.list_value_length(col).fill_null(-1).to_numpy(zero_copy_only=False)
            present = col.is_valid().to_numpy(zero_copy_only=False)
            self._fail_first(
                batch,
                name,
                present & (length != n_tok),
                lambda r, length=length: f"length {length[r]} != len(token_ids) {n_tok[r]}",
            )
        for name in ("token_ids", "loss_mask"):
            col = batch.column(name)
            values = col.flatten()
            if values.null_count:
                bad = values.is_null().to_numpy(zero_copy_only=False)
                self._fail_list_value(batch, name, col, bad, "null value")
        mask = batch.column("loss_mask")
        if len(mask.flatten()):
            low, high = pc.min_max(mask.flatten()).values()
            if low.as_py() < 0 or high.as_py() > 1:
                values = mask.flatten().to_numpy()
                self._fail_list_value(
                    batch, "loss_mask", mask, (values < 0) | (values > 1), "not 0/1"
                )

    def _fail_list_value(self, batch, name: str, col: pa.ListArray, bad: np.ndarray, what: str):
        # Map the first bad flattened value to its row through the offsets: no
        # per-token parent index array (that would be 8 bytes per token).
        index = int(np.flatnonzero(bad)[0])
        offsets = col.offsets.to_numpy()
        row = int(np.searchsorted(offsets, offsets[0] + index, side="right") - 1)
        self.error(batch, name, row, f"value at token {offsets[0] + index - offsets[row]}: {what}")

    def _check_turns(self, batch: pa.RecordBatch, n_tok: np.ndarray, prompt_len: np.ndarray):
        turns = batch.column("turns")
        flat = turns.flatten()
        if len(flat) == 0:
            return
        parents = pc.list_parent_indices(turns).to_numpy()
        offsets = turns.offsets.to_numpy()
        position = np.arange(len(flat)) - (offsets[:-1] - offsets[0])[parents]
        col = {name: flat.field(name).to_numpy(zero_copy_only=False) for name in _SPAN_FIELDS}
        turn = col["turn"]
        bad = turn != position
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            msg = f"turns must be numbered 0..T-1 in order; turn {position[i]} has turn={turn[i]}"
            self.error(batch, "turns.turn", int(parents[i]), msg)
        prev_obs_end = np.where(position > 0, np.roll(col["obs_end"], 1), prompt_len[parents])
        limits = [
            ("start", col["start"] < prev_obs_end, "starts before the prompt / previous turn ends"),
            ("end", col["end"] < col["start"], "end < start"),
            ("obs_start", col["obs_start"] < col["end"], "obs_start < end"),
            ("obs_end", col["obs_end"] < col["obs_start"], "obs_end < obs_start"),
            ("obs_end", col["obs_end"] > n_tok[parents], "span past the end of token_ids"),
        ]
        for name, bad, what in limits:
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                spans = ", ".join(f"{k}={col[k][i]}" for k in _SPAN_FIELDS[1:])
                problem = (
                    f"turn {position[i]}: {what} ({spans}, len(token_ids)={n_tok[parents[i]]})"
                )
                self.error(batch, f"turns.{name}", int(parents[i]), problem)
        actions = pc.is_in(flat.field("action"), value_set=pa.array(TURN_ACTIONS))
        bad = ~actions.to_numpy(zero_copy_only=False)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            problem = (
                f"turn {position[i]}: {flat.field('action')[i].as_py()!r} not in {TURN_ACTIONS}"
            )
            self.error(batch, "turns.action", int(parents[i]), problem)


_SPAN_FIELDS = ("turn", "start", "end", "obs_start", "obs_end")


def _check_columns(got: pa.Schema, want: pa.Schema) -> None:
    if len(set(got.names)) != len(got.names):
        dup = next(n for n in got.names if got.names.count(n) > 1)
        raise DatasetValidationError(dup, "column appears twice")
    for name in want.names:
        if name not in got.names:
            raise DatasetValidationError(name, f"missing column (schema {_label(want)})")
    for name in got.names:
        if name not in want.names:
            raise DatasetValidationError(name, f"unexpected column (schema {_label(want)})")


def _check_type(got: pa.DataType, field: pa.Field) -> None:
    if got != field.type and not _castable(got, field.type):
        raise DatasetValidationError(field.name, f"type {got}, expected {field.type}")


def _cast(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for field in schema:
        arr = batch.column(field.name)
        if arr.type != field.type:
            try:
                arr = arr.cast(field.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise DatasetValidationError(
                    field.name, f"cannot convert {arr.type}: {e}"
                ) from None
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _castable(src: pa.DataType, dst: pa.DataType) -> bool:
    """Same shape of type up to integer / float widths and string / list flavours."""
    t = pa.types
    if src == dst or t.is_null(src):
        return True
    if t.is_integer(src):
        return t.is_integer(dst) or t.is_floating(dst)
    if t.is_floating(src):
        return t.is_floating(dst)
    if _is_string(src):
        return _is_string(dst)
    if _is_list(src):
        return _is_list(dst) and _castable(src.value_type, dst.value_type)
    if t.is_struct(src) and t.is_struct(dst):
        names = [f.name for f in src]
        if sorted(names) != sorted(f.name for f in dst):
            return False
        return all(_castable(src.field(f.name).type, f.type) for f in dst)
    return False


def _is_string(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind)


def _has_required(kind: pa.DataType, nullable: bool = True) -> bool:
    """Whether a value of this type can hold a non-nullable field (itself included)."""
    if not nullable:
        return True
    if pa.types.is_struct(kind):
        return any(_has_required(f.type, f.nullable) for f in kind)
    if _is_list(kind):
        return _has_required(kind.value_type, kind.value_field.nullable)
    return False


def _label(schema: pa.Schema) -> str:
    meta = schema.metadata or {}
    name = meta.get(b"a2tgpo.schema", b"?").decode()
    return f"{name} v{meta.get(b'a2tgpo.version', b'?').decode()}"
