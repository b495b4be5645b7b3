"""The stage contract: every stage declared once, used alike by the flow and the CLI.

A `Stage` says what a stage is called, which URIs it reads and writes for iteration k
(`plan`: the run layout's answer, with its seed and policy version), and how to run it
on such a plan (`run`). The Prefect tasks (`flows/tasks.py`) and the CLI's stage
commands (`a2tgpo/cli_stages.py`) are generated from `STAGES`, so adding a stage is one
declaration here plus one stage function, and no URI or seed rule is written twice.

    plan = STAGES["rollout"].plan(config, 3)     # where iteration 3's rollout reads/writes
    manifest = STAGES["rollout"].run(config, plan, session)
    # = run_rollout(config, prompts_uri=..., policy_uri=..., out_uri=..., seed=...,
    #               policy_version=3, session=session)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from a2tgpo.config import RunConfig
from a2tgpo.faults import failpoint
from a2tgpo.layout import RunLayout
from a2tgpo.rollout.session import EngineSession
from a2tgpo.seeds import derive_seed, numpy_seed
from a2tgpo.stages import advantages, evaluate, prepare, rollout, score_ig, train_step, warmstart

INITIAL = -1  # the "iteration" of the starting policy's evaluation (before RL)
# Roles whose planned URI is the same for every iteration: a command run without
# --iteration may leave them to the layout.
RUN_WIDE_ROLES = frozenset({"reference", "pool", "init"})


@dataclass(frozen=True)
class StagePlan:
    """Where one run of a stage reads and writes, with its seed and policy version."""

    stage: str
    iteration: int | None
    inputs: dict[str, str]
    outputs: dict[str, str]
    seed: int | None = None
    policy_version: int | None = None
    params: dict[str, Any] = field(default_factory=dict)  # other arguments of the function

    @property
    def output(self) -> str:
        """The primary output (the one a rerun checks first)."""
        return next(iter(self.outputs.values()))

    def override(self, **uris: str | None) -> StagePlan:
        """The plan with some inputs / outputs replaced by explicit URIs (CLI options)."""
        given = {k: v for k, v in uris.items() if v is not None}
        unknown = set(given) - set(self.inputs) - set(self.outputs)
        if unknown:
            raise ValueError(f"stage {self.stage!r} has no input or output {sorted(unknown)}")
        return replace(
            self,
            inputs={k: given.get(k, v) for k, v in self.inputs.items()},
            outputs={k: given.get(k, v) for k, v in self.outputs.items()},
        )


Planner = Callable[[RunLayout, RunConfig, int], StagePlan]


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline: its name, its plan for iteration k, its function.

    The function is called with the config and the plan: every input and output role
    as `<role>_uri`, plus those of `seed`, `policy_version`, `session`, `stream` and the
    plan's `params` that its signature names."""

    name: str
    summary: str
    planner: Planner
    function: Callable[..., Any]
    per_iteration: bool = True  # False: run once per run (iteration ignored)
    io_bound: bool = False  # True: a Prefect retry is cheap and safe

    def plan(self, config: RunConfig, iteration: int | None = None) -> StagePlan:
        if self.per_iteration and iteration is None:
            raise ValueError(f"stage {self.name!r} needs an iteration")
        return self.planner(RunLayout.of(config), config, iteration)

    def run(
        self,
        config: RunConfig,
        plan: StagePlan,
        session: EngineSession | None = None,
        stream: bool = False,
    ):
        """Run the stage on a plan; a committed output is returned as is (resume)."""
        failpoint(f"stage-start:{self.name}:{'-' if plan.iteration is None else plan.iteration}")
        kwargs = {f"{role}_uri": uri for role, uri in (plan.inputs | plan.outputs).items()}
        extra = {"seed": plan.seed, "policy_version": plan.policy_version}
        extra |= {"session": session, "stream": stream, **plan.params}
        accepted = inspect.signature(self.function).parameters
        kwargs |= {k: v for k, v in extra.items() if k in accepted and v is not None}
        return self.function(config, **kwargs)


# --- the declarations -----------------------------------------------------------------


def _plan_prepare(layout: RunLayout, config: RunConfig, k: int | None) -> StagePlan:
    outputs = {
        "eval_prompts": layout.uri("eval-prompts"),
        "init": config.model.policy or layout.init_model,
        "train_pool": layout.pool("train"),
        "eval_pool": layout.pool("eval"),
    }
    # The held-out sample depends on the world, not on the run's seed: runs that differ
    # only in their seed (a sweep's members) are evaluated on the same questions.
    return StagePlan("prepare", None, {}, outputs, seed=numpy_seed("eval", config.env.seed))


def _plan_warmstart(layout: RunLayout, config: RunConfig, k: int | None) -> StagePlan:
    init = config.model.policy or layout.init_model
    outputs = {"out": layout.warmstart, "demos": layout.demos}
    return StagePlan("warmstart", None, {"init": init}, outputs, policy_version=0)


def _plan_prompts(layout: RunLayout, config: RunConfig, k: int) -> StagePlan:
    inputs = {"pool": layout.pool("train")}
    outputs = {"out": layout.stage(k, "prompts")}
    seed = numpy_seed("prompts", config.seed, k)
    params = {"count": config.rollout.prompts_per_iteration}
    return StagePlan("prompts", k, inputs, outputs, seed=seed, params=params)


def rollout_seed(config: RunConfig, policy_version: int) -> int:
    """The base seed of the trajectories sampled with policy version v (each trajectory's
    own seed derives from it, its prompt and its index)."""
    return derive_seed(config.rollout.seed, config.seed, policy_version)


def rollout_policy_version(config: RunConfig, k: int) -> int:
    """The policy iteration k rolls out with: k, or with `pipeline.overlap` k - 1 (the
    newest one committed while policy k trains; iteration 0 has only policy 0). A plan,
    not a race: a resumed run rolls out with the same policy whatever ran concurrently."""
    return max(k - 1, 0) if config.pipeline.overlap else k


def _plan_rollout(layout: RunLayout, config: RunConfig, k: int) -> StagePlan:
    version = rollout_policy_version(config, k)
    inputs = {"prompts": layout.stage(k, "prompts"), "policy": layout.policy(config, version)}
    outputs = {"out": layout.stage(k, "trajectories")}
    # the seed stays the iteration's: with overlap, iterations 0 and 1 share policy 0
    seed, params = rollout_seed(config, k), {"staleness": k - version}
    return StagePlan("rollout", k, inputs, outputs, seed, version, params)


def _plan_score_ig(layout: RunLayout, config: RunConfig, k: int) -> StagePlan:
    """IG is scored by the policy that generated the trajectories (spec: v under pi_old)."""
    version = rollout_policy_version(config, k)
    inputs = {
        "trajectories": layout.stage(k, "trajectories"),
        "policy": layout.policy(config, version),
    }
    outputs = {"out": layout.stage(k, "scored")}
    return StagePlan("score-ig", k, inputs, outputs, policy_version=version)


def _plan_advantages(layout: RunLayout, config: RunConfig, k: int) -> StagePlan:
    inputs = {"scored": layout.stage(k, "scored")}
    outputs = {"out": layout.stage(k, "advantaged")}
    return StagePlan("advantages", k, inputs, outputs, params={"iteration": k})


def _plan_train_step(layout: RunLayout, config: RunConfig, k: int) -> StagePlan:
    inputs = {
        "advantaged": layout.stage(k, "advantaged"),
        "policy": layout.policy(config, k),
        "reference": layout.initial_policy(config),
    }
    outputs = {"out": layout.stage(k, "checkpoint")}
    return StagePlan("train-step", k, inputs, outputs, policy_version=k + 1)


def _plan_evaluate(layout: RunLayout, config: RunConfig, k: int) -> StagePlan:
    """Evaluation after iteration k (of policy k + 1); k = INITIAL: of the starting policy.
    Its output is a prefix: `<out>-greedy` and `<out>-sampled` are committed."""
    if k == INITIAL:
        policy, prefix = layout.initial_policy(config), layout.uri("eval-initial")
    else:
        policy, prefix = layout.stage(k, "checkpoint"), layout.stage(k, "eval")
    inputs = {"prompts": layout.uri("eval-prompts"), "policy": policy}
    version = k + 1
    return StagePlan("evaluate", k, inputs, {"out": prefix}, rollout_seed(config, version), version)


URI_HELP = {
    "prompts": "Prompts URI.",
    "policy": "Policy URI (checkpoint or model folder).",
    "trajectories": "Trajectories URI.",
    "scored": "Scored URI.",
    "advantaged": "Advantaged URI.",
    "reference": "KL reference policy URI.",
    "pool": "Prompt pool URI.",
    "init": "Initial model URI.",
    "out": "Output URI.",
}

STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("prepare", "Initial model, prompt pools and the held-out sample.",
              _plan_prepare, prepare.run_prepare, per_iteration=False, io_bound=True),
        Stage("warmstart", "Supervised warm-start on synthetic demonstrations (SFT).",
              _plan_warmstart, warmstart.run_warmstart, per_iteration=False),
        Stage("prompts", "Sample the iteration's training prompts from the pool.",
              _plan_prompts, prepare.sample_prompts, io_bound=True),
        Stage("rollout", "Generate trajectories with the multi-turn search agent.",
              _plan_rollout, rollout.run_rollout),
        Stage("score-ig", "Teacher-forced information gain per turn.",
              _plan_score_ig, score_ig.run_score_ig),
        Stage("advantages", "Per-turn advantages and clip ranges (the configured estimator).",
              _plan_advantages, advantages.run_advantages, io_bound=True),
        Stage("train-step", "One DeepSpeed ZeRO-3 policy update, committed as a checkpoint.",
              _plan_train_step, train_step.run_train_step),
        Stage("evaluate", "EM / F1 on the held-out prompts, greedy and sampled "
              f"(iteration {INITIAL}: the starting policy).",
              _plan_evaluate, evaluate.run_evaluate),
    )
}  # fmt: skip
ITERATION_STAGES = ("prompts", "rollout", "score-ig", "advantages", "train-step")


def stage(name: str) -> Stage:
    try:
        return STAGES[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; choose one of {sorted(STAGES)}") from None
