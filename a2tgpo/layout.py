"""The run layout: where every stage's output lives under `{storage.root}/{run_id}/`.

    model-init/                     the initial policy (the tiny model, unless model.policy)
    prompts-train/, prompts-eval/   the prompt pools; eval-prompts/ the fixed held-out sample
    warmstart/demos/, warmstart/checkpoint/
    eval-initial-greedy/, eval-initial-sampled/   the starting policy's evaluation
    iter=00000/prompts/ trajectories/ scored/ advantaged/ checkpoint/ eval-greedy/ eval-sampled/
    run-config.json                 the settings the run was started with

so a rerun finds what a crashed run committed and redoes only the rest. Iteration k
trains the policy of version k (the warm-start or initial model for k = 0) and commits
version k + 1 as `iter=k/checkpoint`. Which stage reads and writes which of these is
declared once, in `a2tgpo.stages.contract`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from a2tgpo.config import RunConfig
from a2tgpo.config_ops import flatten
from a2tgpo.config_rules import check_run_id
from a2tgpo.data.stage import read_manifest
from a2tgpo.data.storage import Storage
from a2tgpo.envs.prompting import answer_prefix
from a2tgpo.errors import RunConflict


@dataclass(frozen=True)
class RunLayout:
    storage: Storage
    run_id: str

    def __post_init__(self) -> None:
        # The config checks run_id already; a copy made with model_copy(update=...) is not
        # validated, and every URI of the run starts with this folder name.
        check_run_id(self.run_id)

    @classmethod
    def of(cls, config: RunConfig) -> RunLayout:
        return cls(Storage(config.storage), config.run_id)

    def uri(self, *parts: str) -> str:
        return self.storage.join(self.run_id, *parts)

    def stage(self, iteration: int, name: str) -> str:
        return self.storage.stage_uri(self.run_id, iteration, name)

    @property
    def init_model(self) -> str:
        return self.uri("model-init")

    def pool(self, split: str) -> str:
        return self.uri(f"prompts-{split}")

    @property
    def demos(self) -> str:
        return self.uri("warmstart", "demos")

    @property
    def warmstart(self) -> str:
        return self.uri("warmstart", "checkpoint")

    def initial_policy(self, config: RunConfig) -> str:
        """The policy iteration 0 starts from."""
        if config.warmstart.enabled:
            return self.warmstart
        return config.model.policy or self.init_model

    def latest_policy(self, config: RunConfig) -> tuple[str, int]:
        """The newest committed checkpoint of the run and its version (else the initial one)."""
        for k in reversed(range(config.iterations)):
            uri = self.stage(k, "checkpoint")
            if read_manifest(self.storage, uri) is not None:
                return uri, k + 1
        return self.initial_policy(config), 0

    def policy(self, config: RunConfig, iteration: int) -> str:
        """The policy that iteration `iteration` trains (and rolls out with)."""
        if iteration == 0:
            return self.initial_policy(config)
        return self.stage(iteration - 1, "checkpoint")


# Settings a resumed run may change: how long it runs and where it reports to.
# The trainer's process model changes no number (the persistent trainer's steps equal
# the subprocess's bit for bit), so it may change too.
_RESUMABLE = (
    "iterations",
    "storage.",
    "tracking.",
    "pipeline.trainer",
    "pipeline.release_trainer_memory",
    "pipeline.step_timeout_s",
)


def pin_run_config(config: RunConfig, layout: RunLayout) -> None:
    """Record the run's config on its first start; on a rerun, refuse a different one.

    A rerun resumes from the committed stages, so a run id reused with another preset or
    setting would silently mix the two experiments' data. Only `iterations` and the
    storage / tracking sections may change.
    """
    uri = layout.uri("run-config.json")
    ours = {k: v for k, v in flatten(config).items() if not k.startswith(_RESUMABLE)}
    ours["ig.answer_prefix"] = answer_prefix(config)  # resolved: None means the template's
    ours = json.loads(json.dumps(ours, default=str))  # as stored: JSON types
    if not layout.storage.exists(uri):
        layout.storage.write_bytes(uri, json.dumps(ours, indent=1, sort_keys=True).encode())
        return
    pinned = json.loads(layout.storage.read_bytes(uri))
    # A setting newer than the pinned config, left at its default, changes nothing.
    defaults = json.loads(json.dumps(flatten(RunConfig()), default=str))
    added = {k for k in ours.keys() - pinned.keys() if ours[k] == defaults.get(k)}
    keys = (ours.keys() | pinned.keys()) - added
    changed = sorted(k for k in keys if ours.get(k) != pinned.get(k))
    if changed:
        shown = ", ".join(f"{k}: {pinned.get(k)!r} -> {ours.get(k)!r}" for k in changed[:8])
        raise RunConflict(
            f"run {config.run_id!r} was started with other settings ({shown}); "
            "resume it with its own config, or give this one a new run_id"
        )
