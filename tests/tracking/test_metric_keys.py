"""Per-turn metric keys end in the turn index, so MLflow (one chart section per key prefix
before the last `/`) shows each quantity's turns side by side in one section.

The manifests' stats are made by the stages' own code on fake trajectories: the
score-ig stats (`ig_stats`), the advantages stage (`compute_advantages`,
`advantage_stats`), and the train step's loss, rollout correction, update summary and
engine-vs-trainer mismatch (`policy_loss`, `correction_weights`, `UpdateStats`,
`mismatch_stats`, `mlflow_metrics`).
"""

from __future__ import annotations

import re
from collections import defaultdict

import pytest
import torch

from a2tgpo.algo import policy_loss
from a2tgpo.config import EstimatorConfig, TrainConfig
from a2tgpo.data.fakes import fake_trajectories
from a2tgpo.data.manifest import Manifest
from a2tgpo.scoring.trajectories import ig_stats
from a2tgpo.stages.advantages import advantage_stats, compute_advantages
from a2tgpo.tracking.metrics import (
    PER_TURN_QUANTITIES,
    iteration_metrics,
    split_turn_key,
    turn_key,
)
from a2tgpo.training.batching import make_micro_batch, samples_from_table
from a2tgpo.training.update import UpdateStats, correction_weights
from a2tgpo.training.worker import mismatch_stats, mlflow_metrics

TURNS = 3  # every fake trajectory has 3 turns; the last (turn 2) is the answer, without IG


def train_step_stats(advantaged) -> dict:
    """The train-step manifest's stats as the worker writes them (the metrics part)."""
    torch.manual_seed(0)
    mb = make_micro_batch(samples_from_table(advantaged)[:4])
    mask = mb.padded("mask", dtype=torch.bool)
    turn_ids = mb.padded("turn_ids", fill=-1, dtype=torch.long)
    old = mb.padded("rollout_logprobs") + 0.01 * torch.randn(mask.shape)
    logp = old + 0.3 * torch.randn(mask.shape)
    train = TrainConfig(rollout_correction="tis")
    weights, correction = correction_weights(mb, old, mask, turn_ids, train)
    _, loss_stats = policy_loss(
        logp,
        old,
        mb.padded("advantage"),
        mb.padded("eps_low"),
        mb.padded("eps_high"),
        mask,
        turn_ids=turn_ids,
        weights=weights,
    )
    update = UpdateStats()
    update.add(loss_stats | correction)
    summary = {
        **update.summary(),
        "mismatch": mismatch_stats([mb], {id(mb): old}),
        "tokens_per_s": 100.0,
    }
    return {"metrics": mlflow_metrics(summary)}


@pytest.fixture(scope="module")
def metrics() -> dict[str, float]:
    scored = fake_trajectories(16, tokens=192, turns=TURNS, schema_name="scored")
    advantaged, details = compute_advantages(scored, EstimatorConfig(), iteration=0)
    stats = {
        "score-ig": ig_stats(scored),
        "advantages": {"grpo_warmup": False, **advantage_stats(advantaged, details)},
        "train-step": train_step_stats(advantaged),
    }
    manifests = {stage: Manifest.model_construct(stats=s) for stage, s in stats.items()}
    return iteration_metrics(manifests, {"rollout": 1.0})


def per_turn_sections(metrics: dict[str, float]) -> dict[str, set[int]]:
    """MLflow's chart sections of the per-turn keys: {prefix before the last '/': turns}."""
    sections: dict[str, set[int]] = defaultdict(set)
    for key in metrics:
        if (split := split_turn_key(key)) is not None:
            sections[key.rsplit("/", 1)[0]].add(split[1])
    return dict(sections)


def test_every_turn_index_is_the_last_part_of_its_key(metrics):
    with_turn = [k for k in metrics if re.search(r"turn_\d", k)]
    assert with_turn, "no per-turn metrics at all"
    assert all(re.search(r"/turn_\d+$", k) for k in with_turn), with_turn
    assert not [k for k in with_turn if re.search(r"turn_\d+/", k)]


def test_each_quantity_is_one_section_holding_every_turn(metrics):
    sections = per_turn_sections(metrics)
    assert set(sections) == set(PER_TURN_QUANTITIES)  # ~16 sections, whatever the turn count
    for quantity, turns in sections.items():
        # IG is measured after each search, so the answer turn (the last) has none
        want = set(range(TURNS - 1)) if quantity.startswith("ig/") else set(range(TURNS))
        assert turns == want, quantity


def test_the_known_names(metrics):
    for key in (
        "ig/mean/turn_0",
        "ig/std/turn_1",
        "ig/count/turn_0",
        "ig_norm/abs_mean/turn_1",
        "adv/abs_mean/turn_2",
        "eps_low/min/turn_0",
        "eps_high/max/turn_2",
        "clip_fraction/turn_1",
        "mismatch/abs_diff/turn_0",
        "correction/capped_fraction/turn_2",
    ):
        assert key in metrics, key
    assert metrics["eps_low/min/turn_0"] <= metrics["eps_low/max/turn_0"]
    # the overall statistics keep their names (and share the quantity's section prefix)
    assert {"ig/missing", "clip_fraction", "clip_fraction/low"} <= set(metrics)


@pytest.mark.parametrize(
    "key", ["ig/missing", "clip_fraction/low", "em/hops_2", "turn_1", "x/turn_"]
)
def test_other_keys_are_not_per_turn(key):
    assert split_turn_key(key) is None


def test_turn_key_round_trip():
    assert turn_key("eps_low/mean", 3) == "eps_low/mean/turn_3"
    assert split_turn_key(turn_key("adv/mean", "12")) == ("adv/mean", 12)
