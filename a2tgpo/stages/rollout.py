"""The rollout stage: prompts dataset + policy -> trajectories dataset.

Reads a committed prompts dataset, samples `rollout.group_size` trajectories per prompt
with the agent loop on vLLM or HF (`a2tgpo.rollout.trajectories`), and commits the rows
in the TRAJECTORIES schema. A committed output is never redone.

Departure from the papers: the trajectory keeps the engine's own log-probs of its
tokens (`rollout_logprobs`, of the distribution `rollout.logprobs` names) so the
trainer can log the engine/trainer mismatch per turn.
"""

from __future__ import annotations

from a2tgpo.config import RunConfig
from a2tgpo.data.manifest import Manifest
from a2tgpo.data.stage import resumable
from a2tgpo.envs.tools import SearchTool
from a2tgpo.rollout.session import EngineSession
from a2tgpo.rollout.trajectories import commit_trajectories


@resumable
def run_rollout(
    config: RunConfig,
    *,
    prompts_uri: str,
    policy_uri: str,
    out_uri: str,
    policy_version: int,
    seed: int,
    session: EngineSession | None = None,
    tool: SearchTool | None = None,
    progress: bool = True,
    staleness: int = 0,
) -> Manifest:
    """Generate and commit the trajectories of every prompt in `prompts_uri`.

    The policy at `policy_uri` runs in the session's engine (reloaded in place when the
    session keeps one) or in an engine of the stage's own, closed at the end.
    `staleness`: how far the policy being trained is ahead of this one (recorded).
    """
    with EngineSession.borrow(session, config) as engines:
        return commit_trajectories(
            config,
            prompts_uri=prompts_uri,
            policy_uri=policy_uri,
            out_uri=out_uri,
            policy_version=policy_version,
            seed=seed,
            session=engines,
            tool=tool,
            progress=progress,
            staleness=staleness,
        )
