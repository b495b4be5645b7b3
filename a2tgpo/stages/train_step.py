"""The train-step stage: advantaged dataset + policy -> the next policy's checkpoint.

One DeepSpeed ZeRO-3 update (`a2tgpo.training`: worker subprocesses on gloo or NCCL)
with per-turn clip ranges, committed as a checkpoint folder (`hf/` for the engines,
`optim/` with the optimizer state for the next step) with the worker's statistics. A
dataset without a trainable token is refused before any worker starts (DeepSpeed
would otherwise fail deep inside with `'NoneType' object is not iterable`).
"""

from __future__ import annotations

import pyarrow.compute as pc

from a2tgpo.config import RunConfig
from a2tgpo.data.manifest import Manifest
from a2tgpo.data.stage import read_stage, resumable
from a2tgpo.data.storage import Storage
from a2tgpo.errors import InputError
from a2tgpo.rollout.session import EngineSession
from a2tgpo.training.launcher import train_and_commit


@resumable
def run_train_step(
    config: RunConfig,
    *,
    advantaged_uri: str,
    policy_uri: str,
    out_uri: str,
    policy_version: int,
    reference_uri: str | None = None,
    stream: bool = False,
    session: EngineSession | None = None,
) -> Manifest:
    """Update the policy in `policy_uri` on `advantaged_uri`; commit it at `out_uri`.

    `reference_uri` is the KL reference (read only when `train.kl_coef > 0`); `stream`
    copies rank 0's output to stderr (a CLI run's progress bars); a `session` holding a
    persistent trainer (`pipeline.trainer`) runs the step on its workers."""
    check_trainable(config, advantaged_uri)
    return train_and_commit(
        config,
        advantaged_uri=advantaged_uri,
        policy_uri=policy_uri,
        out_uri=out_uri,
        policy_version=policy_version,
        reference_uri=reference_uri,
        stream=stream,
        trainer=session.trainer if session is not None else None,
    )


def check_trainable(config: RunConfig, advantaged_uri: str) -> None:
    """Refuse, in one sentence, a dataset whose loss mask is 0 everywhere."""
    mask = read_stage(Storage(config.storage), advantaged_uri, "advantaged", ["loss_mask"])
    column = mask.column("loss_mask").combine_chunks()
    if (pc.sum(pc.list_flatten(column)).as_py() or 0) == 0:
        raise InputError(
            f"advantaged dataset {advantaged_uri} has no trainable tokens in its "
            f"{mask.num_rows} trajectories (no generated turn: were all prompts longer than "
            "rollout.max_total_tokens allows?)"
        )
