"""The run-config rules tying engines to the trainer: options, temperature, the warning."""

from __future__ import annotations

import pytest

from a2tgpo.config import RunConfig
from a2tgpo.config_ops import apply_overrides
from a2tgpo.engines.options import engine_options, logprob_mismatch_warning, trainer_temperature


def config(**rollout) -> RunConfig:
    return apply_overrides(RunConfig(), [f"rollout.{k}={v}" for k, v in rollout.items()])


def test_engines_get_the_logprobs_mode() -> None:
    assert engine_options(config())["logprobs_mode"] == "sampled"  # the default
    assert engine_options(config(logprobs="raw"))["logprobs_mode"] == "raw"


@pytest.mark.parametrize(
    "rollout, temperature",
    [
        ({}, 1.0),
        ({"temperature": 0.7}, 0.7),
        ({"temperature": 0.7, "top_p": 0.9}, 0.7),  # the cut cannot be reproduced; T can
        ({"temperature": 0.7, "logprobs": "raw"}, 1.0),
        ({"temperature": 0}, 1.0),  # greedy rollouts report raw log-probs
    ],
)
def test_trainer_temperature(rollout: dict, temperature: float) -> None:
    assert trainer_temperature(config(**rollout).rollout) == temperature


@pytest.mark.parametrize(
    "rollout",
    [{}, {"temperature": 0.7}, {"temperature": 1.4}, {"logprobs": "raw"}],
)
def test_no_warning_when_the_trainer_sees_the_distribution_sampled(rollout: dict) -> None:
    assert logprob_mismatch_warning(config(**rollout)) is None


@pytest.mark.parametrize(
    "rollout, words",
    [
        ({"logprobs": "raw", "temperature": 0.7}, ["logprobs=raw", "temperature=0.7"]),
        ({"logprobs": "raw", "top_p": 0.9}, ["logprobs=raw", "top_p=0.9", "not on the one"]),
        ({"top_p": 0.9}, ["logprobs=sampled", "top_p=0.9", "compares different distributions"]),
        ({"temperature": 0.7, "top_k": 20}, ["top_k=20", "temperature=0.7 only"]),
        ({"temperature": 0}, ["greedy"]),
    ],
)
def test_warning_says_what_the_mismatch_statistic_compares(rollout: dict, words: list) -> None:
    warning = logprob_mismatch_warning(config(**rollout))
    assert warning is not None and "mismatch/*/turn_k" in warning
    for word in words:
        assert word in warning
