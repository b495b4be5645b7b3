"""The hard synthetic world: hop mix, namesakes, held-out start entities, retrieval, tokens."""

from __future__ import annotations

from collections import Counter

import pytest

from a2tgpo.envs.bm25 import tokenize
from a2tgpo.envs.parser import extract_answer, parse_action
from a2tgpo.envs.prompting import COMPACT, OBSERVATION_CLOSE, OBSERVATION_OPEN
from a2tgpo.envs.rewards import score_response
from a2tgpo.envs.synthetic import SyntheticWorld
from a2tgpo.envs.synthetic_hard import CITY_WORDS, SECTOR_WORDS, HardWorld
from a2tgpo.presets import ESTIMATOR_PRESETS, PRESETS, preset


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    """The world of the `hard` presets."""
    return SyntheticWorld.from_config(preset("hard").env)


def test_same_seed_same_world_other_seed_other_world() -> None:
    a, b, c = (SyntheticWorld(s, 40, 4, world="hard") for s in (3, 3, 4))
    assert a.corpus == b.corpus and a.questions("train") == b.questions("train")
    assert a.questions("eval") == b.questions("eval")
    assert a.corpus != c.corpus
    assert a.corpus != SyntheticWorld(3, 40, 4).corpus  # not the easy world


def test_one_pool_mixes_one_to_four_hops(world: SyntheticWorld) -> None:
    for split in ("train", "eval"):
        counts = Counter(q.hops for q in world.questions(split))
        assert set(counts) == {1, 2, 3, 4}
        assert min(counts.values()) >= 0.15 * sum(counts.values())  # no hop count is rare
    assert [q.hops for q in world.questions("train", 8)] == [1, 2, 3, 4, 1, 2, 3, 4]


def test_eval_split_holds_out_whole_start_entities(world: SyntheticWorld) -> None:
    train, evals = world.questions("train"), world.questions("eval")
    assert len(evals) >= 400 and len(train) >= 2000
    assert {q.chain[0].subject for q in train}.isdisjoint({q.chain[0].subject for q in evals})
    assert {q.text for q in train}.isdisjoint({q.text for q in evals})
    assert len({q.text for q in train + evals}) == len(train) + len(evals)
    kinds = Counter(world.world.kind[q.chain[0].subject] for q in evals)
    assert kinds["person"] > 0 and kinds["company"] > 0


def test_questions_end_on_the_start_name(world: SyntheticWorld) -> None:
    for q in world.questions("train", 40):
        assert q.text.endswith(f" of {q.chain[0].subject}?")
        assert q.text.count(" of ") == q.hops
    assert world.questions("train", 1)[0].text.startswith(("What is the ", "Who is the "))


def test_prompt_rows_carry_hops(world: SyntheticWorld) -> None:
    rows = world.to_prompts("eval", 4)
    assert [r["meta"]["hops"] for r in rows] == [1, 2, 3, 4]
    assert all(r["meta"]["world"] == "hard" and r["split"] == "eval" for r in rows)
    assert rows[0]["prompt_id"].startswith("syn-hard-s0-eval-")
    assert rows[0]["messages"] == COMPACT.messages(rows[0]["question"])


def test_namesakes_share_name_words(world: SyntheticWorld) -> None:
    hard = world.world
    assert isinstance(hard, HardWorld)
    namesakes = hard.namesakes()
    for person in hard.people:
        first, last = tokenize(person)
        shared = [set(tokenize(o)) for o in namesakes[person]]
        assert any(first in s for s in shared) and any(last in s for s in shared), person
    for entity in hard.cities + hard.companies:
        stem = tokenize(entity)[0]
        assert any(stem in tokenize(o) for o in namesakes[entity]), entity
        assert entity.split()[1] in CITY_WORDS + SECTOR_WORDS
    assert all(not namesakes[c] for c in hard.countries)


def test_a_partial_name_retrieves_namesakes(world: SyntheticWorld) -> None:
    """A careless query (one name word) returns other entities' passages in its top 3."""
    tool, hard = world.search_tool(3), world.world
    fooled = 0
    for entity in hard.people + hard.cities + hard.companies:
        word = entity.split()[0]
        hits = tool.run_one(word).passages
        fooled += any(not set(tokenize(p.text)) >= set(tokenize(entity)) for p in hits)
        assert all(word.lower() in tokenize(p.text) for p in hits)
    assert fooled >= 0.9 * (len(hard.people) + len(hard.cities) + len(hard.companies))


def test_full_names_pin_their_passages(world: SyntheticWorld) -> None:
    hard = world.world
    assert max(hard.mentions().values()) == 3
    for fact in hard.facts.values():
        assert set(tokenize(fact.passage.text)) >= set(tokenize(fact.subject))


def test_ideal_demonstrations_retrieve_every_needed_passage(world: SyntheticWorld) -> None:
    tool = world.search_tool(3)
    for q in world.questions("train") + world.questions("eval"):
        turns = world.demonstration(q, tool)
        assert len(turns) == q.hops + 1
        context = q.text
        for fact, turn in zip(q.chain, turns, strict=False):
            assert parse_action(turn.action).content == fact.subject
            assert fact.subject in context  # copied from the question or the last observation
            found = [(p.title, p.text) for p in tool.run_one(fact.subject).passages]
            assert (fact.passage.title, fact.passage.text) in found, (q.text, fact)
            context = turn.observation
        transcript = world.transcript(turns)
        assert extract_answer(transcript) == q.golds[0]
        assert score_response(transcript, list(q.golds)).em == 1.0


def test_four_hop_transcripts_fit_the_token_budget(world: SyntheticWorld) -> None:
    from a2tgpo.engines.tiny_model import _build_tokenizer
    from a2tgpo.rollout.agent import ObservationTokens

    config = preset("hard")
    assert config.rollout.max_turns >= config.env.max_hops + 1
    tokenizer = _build_tokenizer(world.texts(), config.model.tiny_vocab)
    body_budget = config.rollout.max_observation_tokens
    encode_obs = ObservationTokens(tokenizer, body_budget)
    longest = 0
    for q in [q for q in world.questions("train") + world.questions("eval") if q.hops == 4]:
        prompt = tokenizer.apply_chat_template(
            COMPACT.messages(q.text), add_generation_prompt=True, tokenize=True, return_dict=False
        )
        total = len(prompt)
        for turn in world.demonstration(q):
            total += len(tokenizer.encode(turn.action, add_special_tokens=False)) + 1  # + EOS
            if turn.observation:
                body = turn.observation.removeprefix(OBSERVATION_OPEN)
                body = body.removesuffix(OBSERVATION_CLOSE)
                assert len(tokenizer.encode(body, add_special_tokens=False)) <= body_budget
                total += len(encode_obs(body))
        longest = max(longest, total)
    # room for two more wasted search turns (a query and a full observation each)
    assert longest + 2 * (config.rollout.max_turn_tokens + body_budget) <= (
        config.rollout.max_total_tokens
    )


def test_hard_preset_family() -> None:
    assert {f"hard-{n}" for n in ESTIMATOR_PRESETS} | {"hard"} <= set(PRESETS)
    for name in ["hard", *(f"hard-{n}" for n in ESTIMATOR_PRESETS)]:
        config = preset(name)
        base = preset(name.removeprefix("hard-")) if name != "hard" else preset("embedded")
        assert config.preset == name and config.env.world == "hard"
        assert config.eval.prompts >= 400 and config.rollout.max_turns >= 5
        assert config.estimator == base.estimator and config.train == base.train
    assert preset("embedded").env.world == "easy"


def test_the_easy_world_is_unchanged() -> None:
    small = SyntheticWorld(0, 16, 2)
    assert (len(small.corpus), small.num_questions("train"), small.num_questions("eval")) == (
        52,
        101,
        25,
    )
    assert [q.text for q in small.questions("train", 3)] == [
        "Where was Lak Figil born?",
        "Where was the spouse of Mon Kive born?",
        "Who founded Bozunex?",
    ]
    assert [q.golds for q in small.questions("eval", 2)] == [("Mivon",), ("Bozunex",)]
    big = SyntheticWorld(0, 60, 4)
    assert (len(big.corpus), big.num_questions("train"), big.num_questions("eval")) == (
        195,
        822,
        206,
    )
    assert big.questions("train", 1)[0].text == "Who is Zek Branu married to?"
    assert big.to_prompts("train", 1)[0]["meta"] == {
        "hops": 1,
        "key": "Zek Branu|spouse",
        "seed": 0,
    }
