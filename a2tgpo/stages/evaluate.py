"""The evaluate stage: EM and F1 per data source on held-out prompts, greedy and sampled.

Runs the agent loop twice on the same held-out prompts with the policy under test:
greedy (temperature 0, one sample per prompt) and sampled (the rollout temperature,
`eval.sampled_group` samples per prompt). Each run is committed as a trajectories
dataset (`<prefix>-greedy`, `<prefix>-sampled`) whose manifest stats hold EM / F1 per
data source (and per hop count on the synthetic worlds), so every number links to the
rows that produced it.
"""

from __future__ import annotations

from a2tgpo.config import RunConfig
from a2tgpo.data.manifest import Manifest
from a2tgpo.data.stage import resumable
from a2tgpo.rollout.session import EngineSession
from a2tgpo.rollout.trajectories import commit_trajectories

MODES = ("greedy", "sampled")


def evaluation_config(config: RunConfig, mode: str) -> RunConfig:
    """The rollout settings of one evaluation mode."""
    if mode == "greedy":
        update = {"temperature": 0.0, "group_size": 1}
    elif mode == "sampled":
        update = {"group_size": config.eval.sampled_group}
    else:
        raise ValueError(f"unknown evaluation mode {mode!r}; choose one of {MODES}")
    return config.model_copy(update={"rollout": config.rollout.model_copy(update=update)})


def run_evaluate(
    config: RunConfig,
    *,
    prompts_uri: str,
    policy_uri: str,
    out_uri: str,
    policy_version: int,
    seed: int,
    session: EngineSession | None = None,
) -> dict[str, Manifest]:
    """Commit greedy and sampled evaluation rollouts at `<out_uri>-greedy` and
    `<out_uri>-sampled` (`out_uri` is a prefix); returns their manifests by mode."""
    with EngineSession.borrow(session, config) as engines:
        return {
            mode: resumable(commit_trajectories)(
                evaluation_config(config, mode),
                prompts_uri=prompts_uri,
                policy_uri=policy_uri,
                out_uri=f"{out_uri}-{mode}",
                policy_version=policy_version,
                seed=seed,
                session=engines,
            )
            for mode in MODES
        }
