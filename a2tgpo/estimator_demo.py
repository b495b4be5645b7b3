"""A generated batch of per-turn rows, and a per-turn summary table of the estimator.

Used by `a2tgpo demo-estimator` (a smoke run of the estimator), by
benchmarks/estimator.py and by tests. Nothing here trains anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from a2tgpo.algo import EstimatorSettings, estimator_settings, turn_advantage_details


@dataclass
class TurnBatch:
    group: np.ndarray
    trajectory: np.ndarray
    turn: np.ndarray
    ig: np.ndarray
    outcome: np.ndarray


def random_turn_batch(
    num_groups: int, group_size: int, max_turns: int, seed: int = 0, nan_fraction: float = 0.02
) -> TurnBatch:
    """Trajectories with 1..max_turns turns, IG ~ N(0.05, 0.2), binary outcomes, rows shuffled."""
    rng = np.random.default_rng(seed)
    num_traj = num_groups * group_size
    turns_per_traj = rng.integers(1, max_turns + 1, size=num_traj)
    traj_of_row = np.repeat(np.arange(num_traj), turns_per_traj)
    starts = np.cumsum(turns_per_traj) - turns_per_traj
    turn = np.arange(traj_of_row.size) - np.repeat(starts, turns_per_traj)
    ig = rng.normal(0.05, 0.2, size=traj_of_row.size)
    ig[rng.random(ig.size) < nan_fraction] = np.nan
    outcome = (rng.random(num_traj) < 0.4).astype(np.float64)[traj_of_row]
    perm = rng.permutation(traj_of_row.size)
    return TurnBatch(
        group=(traj_of_row // group_size)[perm],
        trajectory=traj_of_row[perm],
        turn=turn[perm],
        ig=ig[perm],
        outcome=outcome[perm],
    )


def per_turn_table(
    batch: TurnBatch, settings: EstimatorSettings | None = None, **keywords
) -> list[dict[str, float]]:
    """Per turn index: rows, IG mean, mean |IGn|, advantage mean and mean |A|, clip range.

    Settings as `turn_advantages` takes them: an EstimatorSettings, or `estimator=...`
    and setting keywords.
    """
    d = turn_advantage_details(
        batch.group,
        batch.trajectory,
        batch.turn,
        batch.ig,
        batch.outcome,
        estimator_settings(settings, **keywords),
    )
    turn = torch.as_tensor(batch.turn)
    ig = torch.as_tensor(batch.ig)
    rows = []
    for k in range(int(turn.max()) + 1):
        at = turn == k
        has_ig = d.ig_valid & at
        rows.append(
            {
                "turn": k,
                "rows": int(at.sum()),
                "ig_count": int(has_ig.sum()),
                "ig_mean": float(ig[has_ig].mean()) if has_ig.any() else float("nan"),
                "abs_ig_norm": float(d.ig_norm[at].abs().mean()),
                "adv_mean": float(d.advantage[at].mean()),
                "abs_adv": float(d.advantage[at].abs().mean()),
                "eps_low_min": float(d.eps_low[at].min()),
                "eps_low_mean": float(d.eps_low[at].mean()),
                "eps_high_max": float(d.eps_high[at].max()),
            }
        )
    return rows
