"""Validation on write: every kind of bad data is a DatasetValidationError naming the
column, the row and (where the schema has one) the trajectory_id / prompt_id."""

from __future__ import annotations

import pyarrow as pa
import pytest

from a2tgpo.data.errors import DatasetValidationError
from a2tgpo.data.fakes import fake_prompts, fake_trajectories
from a2tgpo.data.schemas import SCHEMAS, TRAJECTORIES
from a2tgpo.data.validate import Validator


def trajectory_rows(n: int = 6) -> list[dict]:
    return fake_trajectories(n, tokens=60, turns=3, batch_rows=n).to_pylist()


def validate(rows_or_table, schema: pa.Schema = TRAJECTORIES, batch_rows: int = 1000) -> None:
    table = (
        rows_or_table
        if isinstance(rows_or_table, pa.Table)
        else pa.Table.from_pylist(rows_or_table, schema=schema)
    )
    check = Validator(schema)
    for batch in table.to_batches(max_chunksize=batch_rows):
        check(batch)


def expect_error(rows, column: str, row: int | None, **kwargs) -> DatasetValidationError:
    with pytest.raises(DatasetValidationError) as caught:
        validate(rows, **kwargs)
    error = caught.value
    assert (error.column, error.row) == (column, row), str(error)
    assert repr(column) in str(error)
    if row is not None:
        assert f"row {row}" in str(error)
    return error


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_valid_data_of_every_schema_passes_unchanged(name):
    table = fake_prompts(5) if name == "prompts" else fake_trajectories(5, schema_name=name)
    out = Validator(SCHEMAS[name])(table.to_batches()[0])
    assert out.schema.equals(SCHEMAS[name], check_metadata=True)
    assert pa.Table.from_batches([out]).equals(table)


def test_missing_and_unexpected_columns():
    table = fake_trajectories(3, tokens=40)
    expect_error(table.drop_columns(["answer"]), "answer", None)
    expect_error(table.append_column("extra", pa.array([1, 2, 3])), "extra", None)


def test_wrong_type_names_the_column():
    table = fake_trajectories(3, tokens=40)
    as_text = table.set_column(
        table.schema.get_field_index("prompt_length"),
        "prompt_length",
        pa.array(["10", "11", "12"]),
    )
    error = expect_error(as_text, "prompt_length", None)
    assert "string" in str(error) and "int32" in str(error)


def test_int64_columns_are_narrowed_when_the_values_fit():
    table = fake_trajectories(3, tokens=40)
    index = table.schema.get_field_index("prompt_length")
    wide = table["prompt_length"].cast(pa.int64())
    validate(table.set_column(index, "prompt_length", wide))
    too_big = table.set_column(index, "prompt_length", pa.array([1, 2**40, 1], pa.int64()))
    expect_error(too_big, "prompt_length", None)


def test_null_in_a_non_nullable_column_names_row_and_trajectory_id():
    rows = trajectory_rows()
    rows[4]["outcome"] = None
    error = expect_error(rows, "outcome", 4)
    assert error.key == rows[4]["trajectory_id"] and rows[4]["trajectory_id"] in str(error)


def test_null_in_a_nested_non_nullable_field():
    rows = trajectory_rows()
    rows[2]["turns"][1]["action"] = None
    expect_error(rows, "turns.action", 2)


def test_turn_span_past_the_tokens():
    rows = trajectory_rows()
    rows[3]["turns"][-1]["obs_end"] = len(rows[3]["token_ids"]) + 5
    error = expect_error(rows, "turns.obs_end", 3)
    assert "past the end of token_ids" in str(error)


def test_turn_spans_out_of_order():
    rows = trajectory_rows()
    rows[1]["turns"][0]["end"] = rows[1]["turns"][0]["start"] - 1
    expect_error(rows, "turns.end", 1)
    rows = trajectory_rows()
    rows[5]["turns"][2]["start"] = rows[5]["turns"][1]["obs_end"] - 1  # overlaps turn 1
    expect_error(rows, "turns.start", 5)


def test_loss_mask_length_and_values():
    rows = trajectory_rows()
    rows[2]["loss_mask"] = rows[2]["loss_mask"][:-1]
    expect_error(rows, "loss_mask", 2)
    rows = trajectory_rows()
    rows[3]["loss_mask"][7] = 2
    error = expect_error(rows, "loss_mask", 3)
    assert "token 7" in str(error)


def test_rollout_logprobs_length_when_present():
    rows = trajectory_rows()
    rows[0]["rollout_logprobs"] = None  # absent is fine
    validate(rows)
    rows[1]["rollout_logprobs"] = rows[1]["rollout_logprobs"] + [0.0]
    expect_error(rows, "rollout_logprobs", 1)


def test_turns_must_be_numbered_contiguously():
    rows = trajectory_rows()
    rows[4]["turns"][1]["turn"] = 2
    rows[4]["turns"][2]["turn"] = 3
    expect_error(rows, "turns.turn", 4)


def test_finish_reason_and_action_vocabularies():
    rows = trajectory_rows()
    rows[3]["finish_reason"] = "timeout"
    error = expect_error(rows, "finish_reason", 3)
    assert "'timeout'" in str(error)
    rows = trajectory_rows()
    rows[1]["turns"][0]["action"] = "browse"
    expect_error(rows, "turns.action", 1)


def test_prompt_length_within_the_tokens():
    rows = trajectory_rows()
    rows[2]["prompt_length"] = len(rows[2]["token_ids"]) + 1
    expect_error(rows, "prompt_length", 2)


def test_duplicate_trajectory_id_across_batches_reports_the_dataset_row():
    rows = trajectory_rows(6)
    rows[5]["trajectory_id"] = rows[1]["trajectory_id"]
    error = expect_error(rows, "trajectory_id", 5, batch_rows=2)  # rows 1 and 5: batches 0, 2
    assert "first at row 1" in str(error)


def test_duplicate_prompt_id():
    rows = fake_prompts(4).to_pylist()
    rows[3]["prompt_id"] = rows[0]["prompt_id"]
    expect_error(rows, "prompt_id", 3, schema=SCHEMAS["prompts"])
