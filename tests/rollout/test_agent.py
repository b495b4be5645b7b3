"""The agent loop on the real engines: a scripted policy (each turn's text forced through
vLLM's structured outputs) checked token by token, and free sampling on both engines."""

from __future__ import annotations

import re

import pytest

from a2tgpo.config import RolloutConfig
from a2tgpo.envs.retrievers import Passage
from a2tgpo.envs.tools import SearchTool
from a2tgpo.rollout.agent import INVALID_ACTION_TEXT, AgentLoop, Episode, ObservationTokens
from tests.conftest import MAX_MODEL_LEN


class ListRetriever:
    """A retriever over a fixed list: every query gets the passages naming its words."""

    def __init__(self, passages: list[str]):
        self.passages = [Passage(text=p) for p in passages]

    def search(self, queries: list[str], topk: int) -> list[list[Passage]]:
        return [[p for p in self.passages if q.lower() in p.text.lower()][:topk] for q in queries]


TOOL = SearchTool(ListRetriever(["Alice Smith was born in Paris.", "Paris is a city in France."]))

# Episode name -> the exact text of each of its turns.
SCRIPTS = {
    "two-hops": [
        "<search> Alice Smith</search>",
        "<search> Paris</search>",
        "<answer> France</answer>",
    ],
    "answer-first": ["<answer> France</answer>"],
    "invalid-then-answer": ["I do not know", "<answer> Paris</answer>"],
    "max-turns": ["<search> Alice Smith</search>"] * 3,
}


def prompt_ids(tokenizer, question: str) -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    return tokenizer.encode(text)


def make_episodes(tokenizer, names) -> list[Episode]:
    ids = prompt_ids(tokenizer, "Which country was Alice Smith born in?")
    return [Episode(name, name, i, 1000 + i, list(ids), len(ids)) for i, name in enumerate(names)]


def scripted(ep: Episode, turn: int) -> str | None:
    script = SCRIPTS[ep.prompt_id]
    return re.escape(script[turn]) if turn < len(script) else None


@pytest.mark.slow
def test_scripted_policy_token_by_token(vllm_engine, tokenizer):
    config = RolloutConfig(max_turns=3, max_turn_tokens=40, max_total_tokens=400)
    episodes = make_episodes(tokenizer, SCRIPTS)
    AgentLoop(vllm_engine, TOOL, config, turn_regex=scripted).run(episodes)
    encode_obs = ObservationTokens(tokenizer, config.max_observation_tokens)
    expected_finish = {
        "two-hops": "answer",
        "answer-first": "answer",
        "invalid-then-answer": "answer",
        "max-turns": "max_turns",
    }
    for ep in episodes:
        script = SCRIPTS[ep.prompt_id]
        assert ep.finish_reason == expected_finish[ep.prompt_id]
        assert len(ep.turns) == len(script)
        assert len(ep.token_ids) == len(ep.loss_mask) == len(ep.logprobs)
        assert ep.loss_mask[: ep.prompt_length] == [0] * ep.prompt_length
        position = ep.prompt_length
        for k, (turn, text) in enumerate(zip(ep.turns, script, strict=True)):
            assert turn["turn"] == k and turn["start"] == position
            generated = ep.token_ids[turn["start"] : turn["end"]]
            assert tokenizer.decode(generated, skip_special_tokens=True) == text
            assert ep.loss_mask[turn["start"] : turn["end"]] == [1] * len(generated)
            # log-probs of the regex-constrained distribution (vLLM masks before them)
            assert all(lp <= 0 for lp in ep.logprobs[turn["start"] : turn["end"]])
            observation = ep.token_ids[turn["obs_start"] : turn["obs_end"]]
            assert ep.loss_mask[turn["obs_start"] : turn["obs_end"]] == [0] * len(observation)
            if k == len(script) - 1:
                assert observation == []  # the terminal turn: nothing appended after it
            elif turn["action"] == "search":
                (obs,) = TOOL.run([turn["query"]])
                assert observation == encode_obs(obs.text)
            else:
                assert turn["action"] == "invalid"
                assert observation == encode_obs(INVALID_ACTION_TEXT)
            position = turn["obs_end"]
        assert position == len(ep.token_ids)
    actions = {ep.prompt_id: [t["action"] for t in ep.turns] for ep in episodes}
    assert actions["two-hops"] == ["search", "search", "answer"]
    assert actions["invalid-then-answer"] == ["invalid", "answer"]
    assert [t["query"] for t in episodes[0].turns[:2]] == ["Alice Smith", "Paris"]


@pytest.mark.slow
def test_token_budget_ends_a_trajectory(vllm_engine, tokenizer):
    (ep,) = make_episodes(tokenizer, ["two-hops"])
    budget = ep.prompt_length + 30  # room for one turn and its observation, not a second turn
    config = RolloutConfig(max_turns=3, max_turn_tokens=40, max_total_tokens=budget)
    AgentLoop(vllm_engine, TOOL, config, turn_regex=scripted).run([ep])
    assert ep.finish_reason == "max_tokens"
    assert len(ep.token_ids) <= budget
    assert ep.turns[-1]["obs_end"] == ep.turns[-1]["end"]  # its observation was dropped


@pytest.mark.parametrize("engine", ["hf", pytest.param("vllm", marks=pytest.mark.slow)])
def test_free_sampling_finishes_with_consistent_spans(engine, request, tokenizer):
    engine = request.getfixturevalue(f"{engine}_engine")
    config = RolloutConfig(max_turns=3, max_turn_tokens=24, max_total_tokens=MAX_MODEL_LEN - 40)
    episodes = make_episodes(tokenizer, ["two-hops"] * 6)
    AgentLoop(engine, TOOL, config).run(episodes)
    for ep in episodes:
        assert ep.finish_reason in ("answer", "max_turns", "max_tokens")
        mask = [0] * len(ep.token_ids)
        for turn in ep.turns:
            mask[turn["start"] : turn["end"]] = [1] * (turn["end"] - turn["start"])
        assert mask == ep.loss_mask  # generated tokens are exactly the turns' spans
