"""The rollout stage end to end on a scripted engine (no model): prompts over the token
budget are skipped and counted, tool errors are counted and warned about."""

from __future__ import annotations

import logging

import pytest

from a2tgpo.config import RunConfig
from a2tgpo.data.fakes import fake_prompts
from a2tgpo.data.stage import read_manifest, read_stage, write_stage
from a2tgpo.data.storage import Storage
from a2tgpo.envs.retrievers import Passage, RetrieverError
from a2tgpo.envs.tools import SearchTool
from a2tgpo.rollout.session import EngineSession
from a2tgpo.rollout.trajectories import first_turn_room
from a2tgpo.stages.rollout import run_rollout
from a2tgpo.tracking.metrics import rollout_metrics
from tests.rollout.scripted import ScriptedEngine

SEARCH_THEN_ANSWER = ["<search> Alice</search>", "<search> Paris</search>", "<answer> x</answer>"]


class _Retriever:
    """Fails every query holding `fail_on` with `reason`; else one passage."""

    def __init__(self, fail_on: str = "\0", reason: str = "deadline exceeded after 4 attempts"):
        self.fail_on, self.reason = fail_on, reason

    def search(self, queries: list[str], topk: int) -> list[list[Passage]]:
        if any(self.fail_on in q for q in queries):
            raise RetrieverError(self.reason)
        return [[Passage(text=f"About {q}.")] for q in queries]


def _config(tmp_path, **rollout) -> RunConfig:
    rollout = {"group_size": 2, "max_turns": 3, "max_total_tokens": 200} | rollout
    return RunConfig.model_validate(
        {"storage": {"root": str(tmp_path / "store")}, "rollout": rollout}
    )


def _rollout(config, tokenizer, model_dir, prompts, turns, retriever=None):
    """Commit `prompts`, roll them out with the scripted engine; the output's URI."""
    storage = Storage(config.storage)
    prompts_uri, out_uri = storage.join("prompts"), storage.join("trajectories")
    write_stage(storage, prompts_uri, prompts, "prompts")
    engine = ScriptedEngine(tokenizer, turns, max_model_len=4096)
    run_rollout(
        config,
        prompts_uri=prompts_uri,
        policy_uri=str(model_dir),
        out_uri=out_uri,
        policy_version=0,
        seed=0,
        session=EngineSession.around(config, engine),
        tool=SearchTool(retriever or _Retriever()),
        progress=False,
    )
    return storage, out_uri


def _with_long_question(prompts, row: int, words: int):
    rows = prompts.to_pylist()
    rows[row]["messages"] = [{"role": "user", "content": "why " * words}]
    return type(prompts).from_pylist(rows, schema=prompts.schema)


def test_first_turn_room_counts_the_budget_and_the_context(tmp_path) -> None:
    rollout = _config(tmp_path, max_total_tokens=100, max_turn_tokens=30).rollout
    assert first_turn_room(10, rollout, context=None) == 30
    assert first_turn_room(80, rollout, context=None) == 20
    assert first_turn_room(100, rollout, context=None) == 0
    assert first_turn_room(60, rollout, context=64) == 4


def test_prompts_over_the_budget_are_skipped_and_counted(
    tmp_path, tokenizer, tiny_model_dir, caplog
) -> None:
    config = _config(tmp_path)
    prompts = _with_long_question(fake_prompts(3), row=1, words=400)
    with caplog.at_level(logging.WARNING):
        storage, out = _rollout(config, tokenizer, tiny_model_dir, prompts, ["<answer> x</answer>"])
    table = read_stage(storage, out, "trajectories")
    stats = read_manifest(storage, out).stats
    assert stats["skipped_too_long_prompts"] == 1
    assert table.num_rows == 4 and "synthetic-train-1" not in table.column("prompt_id").to_pylist()
    assert all(len(turns) == 1 for turns in table.column("turns").to_pylist())
    assert rollout_metrics(stats)["skipped_too_long_prompts"] == 1.0
    warning = [r.getMessage() for r in caplog.records if "too long" in r.getMessage()]
    assert len(warning) == 1 and "1 of 3 prompts" in warning[0], caplog.text


def test_only_prompts_over_the_budget_is_one_clear_error(tmp_path, tokenizer, tiny_model_dir):
    config = _config(tmp_path)
    prompts = _with_long_question(fake_prompts(1), row=0, words=400)
    with pytest.raises(ValueError, match=r"all 1 prompts are too long .*max_total_tokens=200"):
        _rollout(config, tokenizer, tiny_model_dir, prompts, ["<answer> x</answer>"])
    storage = Storage(config.storage)
    assert read_manifest(storage, storage.join("trajectories")) is None


def test_tool_errors_are_counted_and_warned(tmp_path, tokenizer, tiny_model_dir, caplog) -> None:
    config = _config(tmp_path)
    with caplog.at_level(logging.WARNING):
        storage, out = _rollout(
            config, tokenizer, tiny_model_dir, fake_prompts(2), SEARCH_THEN_ANSWER, _Retriever("")
        )
    stats = read_manifest(storage, out).stats
    assert stats["tool_calls"] == stats["tool_errors"] == 2 * 2 * 2  # prompts x G x searches
    assert stats["tool_error_first"] == "deadline exceeded after 4 attempts"
    metrics = rollout_metrics(stats)
    assert metrics["tool_errors"] == metrics["tool_calls"] == 8 and metrics["tool_error_rate"] == 1
    warning = [r.getMessage() for r in caplog.records if "searches failed" in r.getMessage()]
    assert len(warning) == 1 and "deadline exceeded after 4 attempts" in warning[0], caplog.text


def test_a_few_tool_errors_are_counted_without_a_warning(
    tmp_path, tokenizer, tiny_model_dir, caplog
) -> None:
    config = _config(tmp_path)
    with caplog.at_level(logging.WARNING):
        storage, out = _rollout(
            config,
            tokenizer,
            tiny_model_dir,
            fake_prompts(2),
            SEARCH_THEN_ANSWER,
            _Retriever("Paris"),
        )
    stats = read_manifest(storage, out).stats
    assert (stats["tool_calls"], stats["tool_errors"]) == (8, 4)  # the second search fails
    assert stats["skipped_too_long_prompts"] == 0
    assert "searches failed" not in caplog.text
