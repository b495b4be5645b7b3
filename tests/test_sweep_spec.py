"""Sweep planning: every member's config, and refusals before anything runs."""

from __future__ import annotations

import pytest

from a2tgpo.config import StorageConfig
from a2tgpo.data.storage import Storage
from a2tgpo.sweep import (
    SweepRecords,
    SweepSpec,
    from_warmstart,
    plan_members,
    warmstart_config,
)


def spec(**kw) -> SweepSpec:
    base = {"sweep_id": "cmp", "presets": ["grpo", "a2tgpo"], "seeds": [0, 1]}
    return SweepSpec(**(base | kw))


def test_members_vary_the_seed_and_keep_the_world():
    members = plan_members(spec(overrides=["iterations=3"]), parent_run_id="abc")
    assert [(m.preset, m.seed) for m in members] == [
        ("grpo", 0), ("grpo", 1), ("a2tgpo", 0), ("a2tgpo", 1),
    ]  # fmt: skip
    assert members[1].run_id == "cmp-grpo-s1" and members[1].config.seed == 1
    assert {m.config.env.seed for m in members} == {0}  # the world stays fixed
    assert {m.config.iterations for m in members} == {3}
    assert members[0].config.tracking.parent_run_id == "abc"
    assert members[0].config.tracking.sweep_id == "cmp"
    assert members[2].config.estimator.name == "a2tgpo"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"presets": ["grpo", "nope"]}, "unknown preset"),
        ({"presets": []}, "at least one preset"),
        ({"presets": ["grpo", "grpo"]}, "listed twice"),
        ({"seeds": []}, "at least one seed"),
        ({"seeds": [1, 1]}, "distinct"),
        ({"seeds": [-1]}, "distinct and >= 0"),
        ({"overrides": ["train.nope=1"]}, "unknown field"),
        ({"overrides": ["rollout.group_size=0"]}, "greater than or equal"),
        ({"overrides": ["seed=4"]}, "set per member"),
        ({"sweep_id": "a b"}, "letters, digits"),
    ],
)
def test_a_sweep_that_cannot_run_is_refused_in_one_line(changes, message):
    with pytest.raises(ValueError, match=message):
        plan_members(spec(**changes))


def test_members_of_one_seed_share_the_warmstart():
    config = warmstart_config(spec(), 1)
    assert config.run_id == "cmp-warmstart-s1" and config.seed == 1
    member = from_warmstart(plan_members(spec())[0].config, "s3://b/ws/checkpoint")
    assert member.model.policy == "s3://b/ws/checkpoint" and not member.warmstart.enabled


def test_a_lora_preset_shares_the_full_warmstart_it_trains_adapters_on():
    """The warm-start trains every weight whatever model.lora says: LoRA and full
    fine-tuning members of one seed start from the same warm-started policy."""
    config = warmstart_config(spec(presets=["embedded", "embedded-lora"]), 0)
    assert not config.model.lora.enabled  # the first preset's: the warm-start is full


def test_a_warmstart_is_not_shared_across_different_worlds():
    mixed = spec(presets=["grpo", "hard-grpo"])
    with pytest.raises(ValueError, match="no-share-warmstart"):
        warmstart_config(mixed, 0)


def test_records_pin_the_overrides_and_extend_with_seeds(tmp_path):
    records = SweepRecords(Storage(StorageConfig(root=str(tmp_path))), "cmp")
    records.pin(spec(overrides=["iterations=2"]))
    records.pin(spec(overrides=["iterations=2"], seeds=[0, 1, 2]))  # more seeds: fine
    with pytest.raises(ValueError, match="same settings"):
        records.pin(spec(overrides=["iterations=5"]))
    records.record_member("cmp-grpo-s0", status="finished")
    assert records.finished("cmp-grpo-s0") and not records.finished("cmp-grpo-s1")
