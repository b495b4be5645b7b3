"""Segment (group-by) reductions on flat tensors, with torch scatter operations.

The estimator works on flat per-turn rows; every statistic it needs is a reduction
over a segment (a trajectory, a prompt group, a (prompt, turn-index) group). These
helpers keep that vectorized: no Python loop over rows, trajectories or groups.
"""

from __future__ import annotations

import numpy as np
import torch


def as_tensor(values, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A 1-D CPU tensor from a numpy array, a tensor or a sequence (ids may be strings)."""
    if isinstance(values, torch.Tensor):
        tensor = values.detach().cpu()
    else:
        array = np.asarray(values)
        if array.dtype.kind in "OUS":  # string ids: factorize to dense integers
            _, inverse = np.unique(array.astype(str), return_inverse=True)
            array = inverse.reshape(array.shape)
        array = np.ascontiguousarray(array)
        if not array.flags.writeable:  # e.g. a zero-copy view of an Arrow column
            array = array.copy()
        tensor = torch.from_numpy(array)
    if tensor.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(tensor.shape)}")
    return tensor.to(dtype) if dtype is not None else tensor


def dense_ids(keys: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Relabel arbitrary integer keys to 0..n-1 (n = number of distinct keys)."""
    _, inverse = torch.unique(keys, return_inverse=True)
    return inverse, int(inverse.max()) + 1 if inverse.numel() else 0


def segment_sum(values: torch.Tensor, segment: torch.Tensor, num_segments: int) -> torch.Tensor:
    out = torch.zeros(num_segments, dtype=values.dtype)
    return out.index_add_(0, segment, values)


def segment_count(segment: torch.Tensor, num_segments: int, dtype=torch.float64) -> torch.Tensor:
    return torch.bincount(segment, minlength=num_segments).to(dtype)


def segment_mean_std(
    values: torch.Tensor, segment: torch.Tensor, num_segments: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-segment count, mean and population std (two-pass, so no cancellation)."""
    count = segment_count(segment, num_segments, values.dtype)
    mean = segment_sum(values, segment, num_segments) / count.clamp(min=1)
    centered = values - mean[segment]
    var = segment_sum(centered * centered, segment, num_segments) / count.clamp(min=1)
    return count, mean, var.sqrt()


def segment_max(values: torch.Tensor, segment: torch.Tensor, num_segments: int) -> torch.Tensor:
    out = torch.full((num_segments,), torch.finfo(torch.float64).min, dtype=torch.float64)
    return out.scatter_reduce_(0, segment, values.to(torch.float64), reduce="amax")


def segment_min(values: torch.Tensor, segment: torch.Tensor, num_segments: int) -> torch.Tensor:
    out = torch.full((num_segments,), torch.finfo(torch.float64).max, dtype=torch.float64)
    return out.scatter_reduce_(0, segment, values.to(torch.float64), reduce="amin")


def discounted_suffix_sum(
    values: torch.Tensor,
    traj: torch.Tensor,
    last_row: torch.Tensor,
    terms_after: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """S[r] = sum over the rows m >= r of r's trajectory of gamma^(m - r) * values[m].

    Rows are sorted by (trajectory, turn): `traj` is non-decreasing, `last_row[t]` is
    trajectory t's final row and `terms_after[r]` the number of rows after r in its
    trajectory. gamma = 1 takes a float64 global cumsum (error ~1e-16 x the running
    sum); gamma < 1 runs a recurrence over levels of `terms_after` (at most max_turns
    vector steps), which avoids the overflow and cancellation of gamma^-k rescaling.
    """
    if values.numel() == 0:
        return values.clone()
    if gamma == 1.0:
        running = torch.cumsum(values, 0)
        return running[last_row][traj] - running + values
    out = values.clone()
    for level in range(1, int(terms_after.max()) + 1):
        rows = torch.nonzero(terms_after == level).flatten()
        out[rows] = values[rows] + gamma * out[rows + 1]
    return out
