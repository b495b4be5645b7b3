"""The train-step stage: advantaged dataset + policy -> the next policy's checkpoint.

One DeepSpeed ZeRO-3 update (`a2tgpo.training`: worker subprocesses on gloo or NCCL)
with per-turn clip ranges, committed as a checkpoint folder (`hf/` for the engines,
`ds/` with the optimizer state for the next step) with the worker's statistics.
"""

from __future__ import annotations

from a2tgpo.config import RunConfig
from a2tgpo.data.manifest import Manifest
from a2tgpo.data.stage import resumable
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
) -> Manifest:
    """Update the policy in `policy_uri` on `advantaged_uri`; commit it at `out_uri`.

    `reference_uri` is the KL reference (read only when `train.kl_coef > 0`); `stream`
    copies rank 0's output to stderr (a CLI run's progress bars)."""
    return train_and_commit(
        config,
        advantaged_uri=advantaged_uri,
        policy_uri=policy_uri,
        out_uri=out_uri,
        policy_version=policy_version,
        reference_uri=reference_uri,
        stream=stream,
    )
