"""The advantages stage: scored dataset -> advantaged dataset.

Flattens every trajectory's turns into per-turn rows (group = prompt id, trajectory
id, turn index, IG, outcome), calls `a2tgpo.algo.turn_advantage_details` with the
configured estimator, and writes the ADVANTAGED schema: each turn gains its
normalized IG, advantage and clip range. The manifest's stats hold the per-turn
summaries the tracker logs (advantage mean and mean |A|, clip-range min/mean/max),
and how many trajectories have no turn at all (a warning: they train nothing).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from a2tgpo.algo import TurnAdvantages, turn_advantage_details
from a2tgpo.config import EstimatorConfig, RunConfig
from a2tgpo.data.manifest import Manifest
from a2tgpo.data.schemas import ADVANTAGED
from a2tgpo.data.stage import read_manifest, read_stage, resumable, write_stage
from a2tgpo.data.storage import Storage

log = logging.getLogger(__name__)


def flat_turns(table: pa.Table) -> dict[str, np.ndarray]:
    """Per-turn columns of a SCORED table, plus `row`: the trajectory row of each turn."""
    turns = table.column("turns").combine_chunks()
    flat = pc.list_flatten(turns)
    row = pc.list_parent_indices(turns).to_numpy()
    return {
        "row": row,
        "turn": flat.field("turn").to_numpy(),
        "ig": flat.field("ig").fill_null(np.nan).to_numpy(zero_copy_only=False),
        "group": table.column("prompt_id").to_numpy()[row],
        "trajectory": table.column("trajectory_id").to_numpy()[row],
        "outcome": table.column("outcome").to_numpy()[row],
    }


def compute_advantages(
    table: pa.Table, estimator: EstimatorConfig, iteration: int | None = None
) -> tuple[pa.Table, TurnAdvantages]:
    """The ADVANTAGED table of a SCORED table, and the estimator's intermediates (GRPO's
    during the estimator's warm-up iterations)."""
    rows = flat_turns(table)
    details = turn_advantage_details(
        rows["group"],
        rows["trajectory"],
        rows["turn"],
        rows["ig"],
        rows["outcome"],
        estimator.settings(iteration),
    )
    turns = table.column("turns").combine_chunks()
    flat = pc.list_flatten(turns)
    added = {
        "ig_norm": details.ig_norm,
        "advantage": details.advantage,
        "eps_low": details.eps_low,
        "eps_high": details.eps_high,
    }
    turn_type = ADVANTAGED.field("turns").type.value_type
    children = [flat.field(f.name) for f in flat.type] + [
        pa.array(v.numpy(), pa.float64()) for v in added.values()
    ]
    new_flat = pa.StructArray.from_arrays(children, fields=list(turn_type))
    new_turns = pa.ListArray.from_arrays(turns.offsets, new_flat)
    index = table.schema.get_field_index("turns")
    out = table.set_column(index, ADVANTAGED.field("turns"), new_turns)
    return out.cast(ADVANTAGED), details


def advantage_stats(table: pa.Table, details: TurnAdvantages) -> dict[str, Any]:
    """Per turn index: counts, normalized IG, advantage and clip-range summaries."""
    turn = flat_turns(table)["turn"]
    per_turn = {}
    for k in np.unique(turn):
        at = turn == k
        adv = details.advantage.numpy()[at]
        lo, hi = details.eps_low.numpy()[at], details.eps_high.numpy()[at]
        valid = details.ig_valid.numpy()[at]
        ig_norm = details.ig_norm.numpy()[at]
        per_turn[str(int(k))] = {
            "count": int(at.sum()),
            "ig_count": int(valid.sum()),
            "ig_norm_mean": float(ig_norm[valid].mean()) if valid.any() else 0.0,
            "ig_norm_abs_mean": float(np.abs(ig_norm[valid]).mean()) if valid.any() else 0.0,
            "adv_mean": float(adv.mean()),
            "adv_abs_mean": float(np.abs(adv).mean()),
            "eps_low_min": float(lo.min()),
            "eps_low_mean": float(lo.mean()),
            "eps_low_max": float(lo.max()),
            "eps_high_min": float(hi.min()),
            "eps_high_mean": float(hi.mean()),
            "eps_high_max": float(hi.max()),
        }
    return {"turns": int(turn.size), "by_turn": per_turn}


def warn_without_turns(table: pa.Table, uri: str) -> int:
    """How many trajectories have no turn (their prompt left no room for one), warned."""
    count = int(pc.sum(pc.equal(pc.list_value_length(table.column("turns")), 0)).as_py() or 0)
    if count:
        log.warning(
            "advantages: %d of %d trajectories have no turns in %s; they carry no trainable "
            "tokens (prompts longer than the token budget?)",
            count,
            table.num_rows,
            uri,
        )
    return count


@resumable
def run_advantages(
    config: RunConfig, *, scored_uri: str, out_uri: str, iteration: int | None = None
) -> Manifest:
    """Read a committed scored dataset, compute advantages, commit the advantaged one."""
    storage = Storage(config.storage)
    scored = read_stage(storage, scored_uri, "scored")
    if scored.num_rows == 0:
        raise ValueError(f"scored dataset {scored_uri} is empty")
    without_turns = warn_without_turns(scored, scored_uri)
    estimator = config.estimator
    table, details = compute_advantages(scored, estimator, iteration)
    used = estimator.settings(iteration)
    source = read_manifest(storage, scored_uri)
    return write_stage(
        storage,
        out_uri,
        table,
        "advantaged",
        policy_version=source.policy_version if source else None,
        parents=[scored_uri],
        stats={
            "estimator": used.name,
            "grpo_warmup": estimator.in_warmup(iteration),
            "trajectories_without_turns": without_turns,
            **advantage_stats(table, details),
        },
        rows_per_part=config.storage.rows_per_part,
    )
