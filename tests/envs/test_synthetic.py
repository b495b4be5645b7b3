"""The synthetic world: determinism, disjoint splits, hop coverage, demonstrations that work."""

from __future__ import annotations

import pytest

from a2tgpo.envs.bm25 import BM25Retriever
from a2tgpo.envs.parser import extract_answer, parse_action
from a2tgpo.envs.prompting import COMPACT
from a2tgpo.envs.rewards import score_response
from a2tgpo.envs.synthetic import SyntheticWorld, question_text
from a2tgpo.envs.synthetic_world import MAX_MENTIONS
from a2tgpo.envs.tools import SearchTool


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld(seed=0, num_entities=60, max_hops=4)


def test_same_seed_same_world_other_seed_other_world() -> None:
    a, b, c = SyntheticWorld(3, 20, 2), SyntheticWorld(3, 20, 2), SyntheticWorld(4, 20, 2)
    assert a.corpus == b.corpus and a.questions("train") == b.questions("train")
    assert a.questions("eval") == b.questions("eval")
    assert a.corpus != c.corpus


def test_splits_are_disjoint_and_cover_every_hop_count(world: SyntheticWorld) -> None:
    train, evals = world.questions("train"), world.questions("eval")
    assert {q.text for q in train}.isdisjoint({q.text for q in evals})
    assert {q.key for q in train}.isdisjoint({q.key for q in evals})
    for split in (train, evals):
        assert {q.hops for q in split} == {1, 2, 3, 4}
        assert len({q.text for q in split}) == len(split)
    first = world.questions("train", 8)
    assert [q.hops for q in first] == [1, 2, 3, 4, 1, 2, 3, 4]  # round-robin over hop counts
    with pytest.raises(ValueError, match="split"):
        world.questions("test")


def test_questions_cycle_with_unique_ids(world: SyntheticWorld) -> None:
    n = world.num_questions("eval")
    qs = world.questions("eval", n + 5)
    assert len({q.question_id for q in qs}) == n + 5
    assert [q.key for q in qs[n:]] == [q.key for q in qs[:5]]
    assert world.questions("eval", 3) == qs[:3]  # a prefix is stable


def test_chains_are_consistent(world: SyntheticWorld) -> None:
    for q in world.questions("train") + world.questions("eval"):
        assert len(q.chain) == q.hops and q.golds == (q.chain[-1].object,)
        for prev, nxt in zip(q.chain, q.chain[1:], strict=False):
            assert prev.object == nxt.subject
        entities = [q.chain[0].subject] + [f.object for f in q.chain]
        assert len(set(entities)) == len(entities)
        for fact in q.chain:  # the passage states the fact
            assert fact.subject in fact.passage.text and fact.object in fact.passage.text
        assert q.text == question_text(q.chain[0].subject, tuple(f.relation for f in q.chain))
        assert q.chain[0].subject in q.text and len(q.text.split()) <= 24


def test_every_entity_is_named_in_at_most_three_passages(world: SyntheticWorld) -> None:
    assert max(world.world.mentions().values()) == MAX_MENTIONS


def test_demonstrations_find_every_fact_and_score_1(world: SyntheticWorld) -> None:
    tool = SearchTool(BM25Retriever(world.corpus), topk=3)
    questions = world.questions("train") + world.questions("eval")
    found = total = 0
    for q in questions:
        turns = world.demonstration(q, tool)
        assert len(turns) == q.hops + 1
        for fact, turn in zip(q.chain, turns, strict=False):
            assert parse_action(turn.action).content == fact.subject
            assert turn.observation.startswith("\n<information>Doc 1")
            found += fact.passage.text in turn.observation
            total += 1
        assert parse_action(turns[-1].action).kind == "answer" and turns[-1].observation == ""
        transcript = world.transcript(turns)
        assert extract_answer(transcript) == q.golds[0]
        assert score_response(transcript, list(q.golds)).em == 1.0
    assert found / total >= 0.95  # by construction (<= 3 mentions per entity) it is 1.0
    assert found == total


def test_each_search_query_is_copyable(world: SyntheticWorld) -> None:
    for q in world.questions("train", 200):
        turns = world.demonstration(q)
        context = q.text
        for fact, turn in zip(q.chain, turns, strict=False):
            assert fact.subject in context  # from the question or the last observation
            context = turn.observation


def test_texts_and_prompts(world: SyntheticWorld) -> None:
    texts = world.texts(max_demonstrations=50)
    assert COMPACT.instruction in texts and sum(t.startswith("<search>") for t in texts) == 50
    assert all(p.contents in texts for p in world.corpus)
    rows = world.to_prompts("eval", 4)
    assert rows[0]["messages"] == COMPACT.messages(rows[0]["question"])
    assert rows[0]["data_source"] == "synthetic" and rows[0]["split"] == "eval"
    assert rows[0]["meta"]["hops"] == 1 and rows[0]["golds"] == list(
        world.questions("eval", 1)[0].golds
    )


def test_default_config_world_is_small() -> None:
    stats = SyntheticWorld(0, 60, 2).stats
    assert stats["passages"] < 250 and stats["corpus_words"] < 400
    with pytest.raises(ValueError, match="max_hops"):
        SyntheticWorld(0, 60, 5)
