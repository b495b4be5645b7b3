"""Errors of the data layer. Messages name URIs, columns and rows, never credentials."""

from __future__ import annotations


class DatasetValidationError(ValueError):
    """A dataset does not match its canonical schema or breaks a row invariant.

    `column` is the offending column (dotted for nested fields, e.g. `turns.end`),
    `row` the 0-based row index in the dataset being written (None for a schema-level
    problem) and `key` the row's trajectory_id / prompt_id when the schema has one.
    """

    def __init__(
        self,
        column: str,
        problem: str,
        *,
        row: int | None = None,
        key: str | None = None,
        key_column: str | None = None,
    ) -> None:
        self.column = column
        self.problem = problem
        self.row = row
        self.key = key
        where = f"column {column!r}"
        if row is not None:
            where += f", row {row}"
        if key is not None:
            where += f" ({key_column} {key!r})"
        super().__init__(f"{where}: {problem}")


class NotCommitted(FileNotFoundError):
    """A stage has no manifest yet: it was never written, or a writer crashed mid-way."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        super().__init__(f"stage {uri} is not committed (no manifest.json)")


class StageMismatch(ValueError):
    """A committed stage holds something other than what the caller asked for."""
