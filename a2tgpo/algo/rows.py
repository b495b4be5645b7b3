"""Validation and segment structure of flat per-turn rows.

One row per assistant turn, rows in any order. `prepare_turn_rows` checks the rows
(spec: "anything else is a clear error, not a silent result") and sorts them by
(trajectory, turn) so that each trajectory is a contiguous run of rows; every check
after the sort compares neighbours, so validation costs a few vector passes. Errors
name the offending rows by their index in the caller's arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from a2tgpo.algo.segments import as_tensor, dense_ids

_SHOWN = 5  # offending rows named in an error message
_KEY_LIMIT = 1 << 62  # (trajectory, turn) packed into one int64 sort key below this


@dataclass(frozen=True)
class TurnRows:
    """Rows sorted by (trajectory, turn); per-row tensors are in sorted order."""

    order: torch.Tensor  # sorted row r is the caller's row order[r]
    inverse: torch.Tensor | None  # caller's row i is sorted row inverse[i]; None if unsorted
    traj: torch.Tensor  # dense trajectory id, 0..num_traj-1 (non-decreasing)
    group: torch.Tensor  # dense group id, 0..num_groups-1
    turn: torch.Tensor  # the caller's 0-based turn index (int64)
    position: torch.Tensor  # place of the turn within its trajectory, from 0
    is_last: torch.Tensor  # the trajectory's terminal turn
    terms_after: torch.Tensor  # n: tool-call turns from this one to the end (0 on the last)
    last_row: torch.Tensor  # [num_traj] sorted index of each trajectory's terminal row
    num_traj: int
    num_groups: int
    traj_group: torch.Tensor  # [num_traj] dense group of each trajectory
    traj_outcome: torch.Tensor  # [num_traj] float64 outcome of each trajectory

    def sort(self, values: torch.Tensor) -> torch.Tensor:
        """A per-row tensor in the caller's order, into sorted order."""
        return values if self.inverse is None else values.index_select(0, self.order)

    def unsort(self, values: torch.Tensor) -> torch.Tensor:
        """A per-row tensor in sorted order, back to the caller's order."""
        # index_select with the inverse permutation is ~2x faster than a scatter.
        return values if self.inverse is None else values.index_select(0, self.inverse)


def prepare_turn_rows(group, trajectory, turn, outcome) -> TurnRows:
    """Validate the rows and build their segment structure (see module docstring)."""
    trajectory_raw = trajectory
    group_t = as_tensor(group, "group")
    traj_t = as_tensor(trajectory, "trajectory")
    turn_t = as_tensor(turn, "turn")
    outcome_t = as_tensor(outcome, "outcome", torch.float64)
    lengths = {"group": group_t, "trajectory": traj_t, "turn": turn_t, "outcome": outcome_t}
    _check_lengths(lengths)
    turn_t = _check_turn_values(turn_t, trajectory_raw)
    bad = torch.nonzero(~torch.isfinite(outcome_t)).flatten()
    if bad.numel():
        raise ValueError(_name_rows("non-finite outcome", bad, trajectory_raw, turn_t))

    order, s_traj_key, presorted = _sort_by_trajectory_and_turn(traj_t, turn_t)
    n = order.numel()
    inverse = None
    if not presorted:
        inverse = torch.empty_like(order).index_copy_(0, order, torch.arange(n))
    s_turn, s_outcome, s_group_raw = (
        t.index_select(0, order) for t in (turn_t, outcome_t, group_t)
    )
    same_next = torch.zeros(n, dtype=torch.bool)
    same_next[:-1] = s_traj_key[1:] == s_traj_key[:-1]
    step = torch.zeros_like(s_turn)
    step[:-1] = s_turn[1:] - s_turn[:-1]
    checks = (
        ("duplicate (trajectory, turn)", same_next & (step == 0)),
        ("gap in a trajectory's turn indices", same_next & (step > 1)),
        ("outcome differs within a trajectory", _differs_from_next(s_outcome, same_next)),
        ("trajectory appears in more than one group", _differs_from_next(s_group_raw, same_next)),
    )
    for kind, flags in checks:
        rows = torch.nonzero(flags).flatten()
        if rows.numel():
            offenders = torch.cat([order[rows], order[rows + 1]])
            raise ValueError(_name_rows(kind, offenders, trajectory_raw, turn_t))

    is_first = torch.ones(n, dtype=torch.bool)
    is_first[1:] = ~same_next[:-1]
    s_traj = torch.cumsum(is_first, 0) - 1
    first_row = torch.nonzero(is_first).flatten()
    last_row = torch.nonzero(~same_next).flatten()
    traj_group, num_groups = dense_ids(s_group_raw[first_row])
    return TurnRows(
        order=order,
        inverse=inverse,
        traj=s_traj,
        group=traj_group[s_traj],
        turn=s_turn,
        position=s_turn - s_turn[first_row][s_traj],
        is_last=~same_next,
        terms_after=s_turn[last_row][s_traj] - s_turn,
        last_row=last_row,
        num_traj=int(first_row.numel()),
        num_groups=num_groups,
        traj_group=traj_group,
        traj_outcome=s_outcome[first_row],
    )


def _check_lengths(arrays: dict[str, torch.Tensor]) -> None:
    lengths = {name: int(a.shape[0]) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"length mismatch between per-turn inputs: {lengths}")


def _check_turn_values(turn_t: torch.Tensor, trajectory_raw) -> torch.Tensor:
    if turn_t.is_floating_point():
        bad = torch.nonzero(turn_t != turn_t.round()).flatten()
        if bad.numel():
            raise ValueError(
                f"turn must hold integer turn indices; not at rows {bad[:_SHOWN].tolist()}"
            )
    turn_t = turn_t.to(torch.int64)
    bad = torch.nonzero(turn_t < 0).flatten()
    if bad.numel():
        raise ValueError(_name_rows("negative turn index", bad, trajectory_raw, turn_t))
    return turn_t


def _sort_by_trajectory_and_turn(traj_t: torch.Tensor, turn_t: torch.Tensor):
    """Row order sorting by (trajectory, turn), and each sorted row's trajectory key."""
    if traj_t.numel() == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty, True
    span = int(turn_t.max()) + 1
    keys = traj_t if not traj_t.is_floating_point() and traj_t.dtype != torch.bool else None
    if keys is not None:
        keys = keys.to(torch.int64)
        low, high = int(keys.min()), int(keys.max())
        keys = None if (high - low + 1) * span >= _KEY_LIMIT else keys - low
    if keys is None:  # floats, bools, or ids too spread out to pack: relabel first
        keys, _ = dense_ids(traj_t)
    packed = keys * span + turn_t
    if bool((packed[1:] >= packed[:-1]).all()):  # already sorted: the pipeline's own layout
        return torch.arange(packed.numel()), keys, True
    order = torch.argsort(packed)
    return order, keys.index_select(0, order), False


def _differs_from_next(values: torch.Tensor, same_next: torch.Tensor) -> torch.Tensor:
    flags = torch.zeros_like(same_next)
    flags[:-1] = same_next[:-1] & (values[1:] != values[:-1])
    return flags


def _name_rows(kind: str, rows: torch.Tensor, trajectory_raw, turn: torch.Tensor) -> str:
    rows = rows.unique()
    shown = ", ".join(
        f"row {int(r)} (trajectory {_raw_id(trajectory_raw, int(r))!r}, turn {int(turn[r])})"
        for r in rows[:_SHOWN]
    )
    more = f" and {rows.numel() - _SHOWN} more" if rows.numel() > _SHOWN else ""
    return f"{kind}: {shown}{more}"


def _raw_id(raw, row: int):
    value = raw[row]
    return value.item() if hasattr(value, "item") else value
