"""A sweep: one training run per (preset, seed), planned, checked and recorded up front.

    spec = SweepSpec(sweep_id="cmp", presets=["hard-grpo", "hard-a2tgpo"], seeds=[0, 1, 2])
    members = plan_members(spec)        # every member's full config, validated, or one error

Members are ordinary training runs (`run_id = <sweep>-<preset>-s<seed>`) in the same
storage, so each resumes like any run. A seed varies everything random in a member (the
tiny model's init, the warm-start's order, prompt sampling, rollout sampling); the
world (`env.seed`) and the held-out set stay fixed, so members with the same seed are
paired. Members that share a seed share their warm-start (it does not depend on the
estimator): it is trained once per seed, in a run of its own, and the members start
from its checkpoint.

The sweep's records live beside the runs, under `{storage.root}/sweeps/<sweep_id>/`:
`sweep.json` (the spec, the parent MLflow run) and `members/<run_id>.json` (each
member's status, MLflow run id and error), which is how a rerun skips finished members.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from a2tgpo.config import RunConfig
from a2tgpo.data.storage import Storage
from a2tgpo.presets import PRESETS, resolve_config

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}$")


@dataclass(frozen=True)
class SweepSpec:
    """What to run: presets x seeds, the same overrides on every member."""

    sweep_id: str
    presets: list[str]
    seeds: list[int]
    overrides: list[str] = field(default_factory=list)
    share_warmstart: bool = True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Member:
    preset: str
    seed: int
    config: RunConfig

    @property
    def run_id(self) -> str:
        return self.config.run_id


def member_run_id(sweep_id: str, preset: str, seed: int) -> str:
    return f"{sweep_id}-{preset}-s{seed}"


def warmstart_run_id(sweep_id: str, seed: int) -> str:
    return f"{sweep_id}-warmstart-s{seed}"


def check_spec(spec: SweepSpec) -> None:
    """Refuse a sweep that cannot run, before anything starts (one line per problem)."""
    if not _ID.match(spec.sweep_id):
        raise ValueError(f"sweep id {spec.sweep_id!r}: letters, digits, '-', '_', '.' only")
    if not spec.presets:
        raise ValueError("a sweep needs at least one preset")
    unknown = [p for p in spec.presets if p not in PRESETS]
    if unknown:
        raise ValueError(f"unknown preset(s) {unknown}; choose from {sorted(PRESETS)}")
    if len(set(spec.presets)) != len(spec.presets):
        raise ValueError(f"a preset is listed twice: {spec.presets}")
    if not spec.seeds:
        raise ValueError("a sweep needs at least one seed")
    if len(set(spec.seeds)) != len(spec.seeds) or any(s < 0 for s in spec.seeds):
        raise ValueError(f"seeds must be distinct and >= 0, got {spec.seeds}")
    for item in spec.overrides:
        key = item.split("=", 1)[0].strip()
        if key in ("run_id", "seed", "preset") or key.startswith("tracking.parent"):
            raise ValueError(f"--set {key}=... is set per member by the sweep")


def member_config(spec: SweepSpec, preset: str, seed: int, parent_run_id: str = "") -> RunConfig:
    """The full config of one member (its preset, the sweep's overrides, its seed)."""
    config = resolve_config(preset, list(spec.overrides))
    tracking = config.tracking.model_copy(
        update={"parent_run_id": parent_run_id, "sweep_id": spec.sweep_id}
    )
    return config.model_copy(
        update={
            "run_id": member_run_id(spec.sweep_id, preset, seed),
            "seed": seed,
            "tracking": tracking,
        }
    )


def plan_members(spec: SweepSpec, parent_run_id: str = "") -> list[Member]:
    """Every member's config, validated; a bad preset or override fails before any run."""
    check_spec(spec)
    members = []
    for preset in spec.presets:
        for seed in spec.seeds:
            try:
                config = member_config(spec, preset, seed, parent_run_id)
            except ValueError as error:  # pydantic's ValidationError is a ValueError
                first = str(error).strip().splitlines()
                raise ValueError(f"preset {preset!r} with the sweep's --set: {first}") from None
            members.append(Member(preset, seed, config))
    return members


def warmstart_config(spec: SweepSpec, seed: int) -> RunConfig:
    """The run that trains the warm-start shared by the members of one seed.

    Built from the first preset: a warm-start reads only the model, world, rollout
    format and warm-start settings, which the estimator presets share (checked)."""
    configs = [member_config(spec, p, seed) for p in spec.presets]
    fingerprint = {_warmstart_inputs(c) for c in configs}
    if len(fingerprint) > 1:
        raise ValueError(
            "the presets differ in what the warm-start reads (model, env, rollout format or "
            "warmstart settings); run the sweep with --no-share-warmstart"
        )
    return configs[0].model_copy(update={"run_id": warmstart_run_id(spec.sweep_id, seed)})


def _warmstart_inputs(config: RunConfig) -> str:
    parts = [config.env, config.warmstart, config.reward]
    # model.lora is not read: the warm-start trains every weight (it is the adapters' base)
    model = config.model.model_dump(exclude={"lora"})
    rollout = config.rollout.model_dump(include={"max_observation_tokens"})
    train = config.train.model_dump(include={"ppo_epochs", "micro_batch_tokens", "num_gpus"})
    dumps = [model, *(p.model_dump() for p in parts), rollout, train]
    return json.dumps(dumps, sort_keys=True)


def from_warmstart(config: RunConfig, warmstart_uri: str) -> RunConfig:
    """A member that starts from a shared warm-start checkpoint instead of its own."""
    return config.model_copy(
        update={
            "model": config.model.model_copy(update={"policy": warmstart_uri}),
            "warmstart": config.warmstart.model_copy(update={"enabled": False}),
        }
    )


class SweepRecords:
    """The sweep's own files in storage: its spec and one record per member."""

    def __init__(self, storage: Storage, sweep_id: str):
        self.storage = storage
        self.root = storage.join("sweeps", sweep_id)

    def uri(self, *parts: str) -> str:
        return self.storage.join(self.root, *parts)

    def read_json(self, *parts: str) -> dict[str, Any] | None:
        uri = self.uri(*parts)
        return json.loads(self.storage.read_bytes(uri)) if self.storage.exists(uri) else None

    def write_json(self, data: dict[str, Any], *parts: str) -> None:
        text = json.dumps(data, indent=1, sort_keys=True, default=str)
        self.storage.write_bytes(self.uri(*parts), text.encode())

    def pin(self, spec: SweepSpec) -> dict[str, Any]:
        """Record the spec on the first start; on a rerun, refuse other overrides (they
        would mix two experiments under one id). More presets or seeds extend the sweep."""
        recorded = self.read_json("sweep.json")
        if recorded is None:
            recorded = {"spec": spec.to_json(), "parent_run_id": ""}
            self.write_json(recorded, "sweep.json")
            return recorded
        if recorded["spec"]["overrides"] != spec.overrides:
            raise ValueError(
                f"sweep {spec.sweep_id!r} was started with --set {recorded['spec']['overrides']}; "
                "rerun it with the same settings or give a new sweep id"
            )
        recorded["spec"] = spec.to_json()
        self.write_json(recorded, "sweep.json")
        return recorded

    def member(self, run_id: str) -> dict[str, Any] | None:
        return self.read_json("members", f"{run_id}.json")

    def record_member(self, run_id: str, **record: Any) -> None:
        self.write_json({"run_id": run_id, **record}, "members", f"{run_id}.json")

    def finished(self, run_id: str) -> bool:
        record = self.member(run_id)
        return record is not None and record.get("status") == "finished"
