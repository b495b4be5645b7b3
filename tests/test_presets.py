"""Presets: every preset validates; the reference presets carry their recipe's settings
and a table of sources; the GRPO warm-up switch of the estimator."""

from __future__ import annotations

import numpy as np
import pytest

from a2tgpo.config import EstimatorConfig, RunConfig
from a2tgpo.envs.prompting import IGPO, answer_prefix
from a2tgpo.presets import PRESETS, preset
from a2tgpo.reference_presets import a2tgpo_qwen3_4b, search_qa_7b


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_validates_and_names_itself(name: str):
    config = preset(name)
    assert RunConfig.model_validate(config.model_dump()) == config
    assert config.preset == name
    config.estimator.settings()  # resolvable


def test_the_released_a2tgpo_recipe():
    c = preset("a2tgpo-qwen3-4b")
    assert c.model.policy == "Qwen/Qwen3-4B" and c.train.num_gpus == 8
    assert (c.rollout.prompts_per_iteration, c.rollout.group_size) == (64, 16)
    assert c.rollout.prompts_per_iteration // c.train.mini_batches == 8  # mini-batch of 8
    assert (c.train.learning_rate, c.train.kl_coef, c.reward.metric) == (1e-6, 0.0, "em")
    assert c.ig.mode == "log_prob_diff" and c.train.ratio_level == "turn"
    settings = c.estimator.settings()
    assert (settings.clip_eps_low, settings.clip_eps_high, settings.adaptive_clip) == (
        0.003,
        0.004,
        True,
    )
    assert c.train.dual_clip is None and c.estimator.grpo_warmup_iterations == 0


def test_igpos_recipe_matches_its_script():
    c = preset("search-qa-7b")
    assert (c.reward.metric, c.reward.format_penalty, c.ig.mode) == ("f1", -2.0, "log_prob_diff")
    assert (c.estimator.clip_eps_low, c.estimator.clip_eps_high) == (0.2, 0.2)
    assert c.train.ratio_level == "token" and c.train.dual_clip == 3.0
    assert (c.train.kl_coef, c.train.mini_batches) == (0.001, 1)
    assert c.env.prompt_template == "igpo" and answer_prefix(c) == IGPO.answer_prefix


@pytest.mark.parametrize("recipe", [a2tgpo_qwen3_4b, search_qa_7b])
def test_reference_presets_document_their_settings(recipe):
    doc = recipe.__doc__
    assert "| setting" in doc and "| source" in doc
    assert doc.count("\n    |") >= 12  # a row per setting


def test_grpo_warmup_switches_the_estimator_for_the_first_iterations():
    from a2tgpo.algo import turn_advantage_details

    estimator = EstimatorConfig(name="a2tgpo", grpo_warmup_iterations=2)
    assert [estimator.in_warmup(k) for k in (0, 1, 2, None)] == [True, True, False, False]
    assert estimator.settings(1).name == "grpo" and estimator.settings(2).name == "a2tgpo"
    assert estimator.settings(0).clip_eps_low == estimator.clip_eps_low
    # one prompt, two trajectories of two turns: GRPO ignores IG, A²TGPO does not
    group = np.array(["p"] * 4)
    trajectory = np.array(["a", "a", "b", "b"])
    turn = np.array([0, 1, 0, 1])
    ig = np.array([0.5, np.nan, -0.5, np.nan])
    outcome = np.array([1.0, 1.0, 0.0, 0.0])
    args = (group, trajectory, turn, ig, outcome)
    warm = turn_advantage_details(*args, estimator.settings(0)).advantage.numpy()
    after = turn_advantage_details(*args, estimator.settings(2)).advantage.numpy()
    assert warm[0] == warm[1] and warm[2] == warm[3]  # one advantage per trajectory
    assert not np.allclose(warm, after)


def test_the_warmup_reaches_the_stage_and_mlflow():
    from a2tgpo.stages.contract import STAGES
    from a2tgpo.tracking.metrics import advantage_metrics

    assert STAGES["advantages"].plan(RunConfig(), 3).params == {"iteration": 3}
    assert advantage_metrics({"grpo_warmup": True})["estimator/grpo_warmup"] == 1.0
    assert advantage_metrics({})["estimator/grpo_warmup"] == 0.0
