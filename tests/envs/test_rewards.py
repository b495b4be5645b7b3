"""EM / F1 on known cases (SQuAD v1.1 semantics) and the format penalty of score_response."""

from __future__ import annotations

import numpy as np
import pytest

from a2tgpo.envs.rewards import (
    Reward,
    exact_match,
    f1_score,
    normalize_answer,
    score_response,
    split_golds,
)


@pytest.mark.parametrize(
    "raw, normalized",
    [
        ("The Eiffel Tower", "eiffel tower"),
        ("  A  cat,   an apple! ", "cat apple"),
        ("Denver Broncos.", "denver broncos"),
        ("theatre", "theatre"),  # 'the' only as a whole word
        ("U.S.A.", "usa"),
        ("", ""),
    ],
)
def test_normalize_answer(raw: str, normalized: str) -> None:
    assert normalize_answer(raw) == normalized


def test_split_golds() -> None:
    assert split_golds("Turkey<|answer_split|> türkiye <|answer_split|>") == ["Turkey", "türkiye"]
    assert split_golds(["a", "b<|answer_split|>c"]) == ["a", "b", "c"]
    assert split_golds(np.array(["x", "y"], dtype=object)) == ["x", "y"]
    for empty in ("", "<|answer_split|> ", [], ["  "]):
        with pytest.raises(ValueError, match="no gold answers"):
            split_golds(empty)


def test_exact_match() -> None:
    assert exact_match("the Denver Broncos", "Denver Broncos") == 1.0
    assert exact_match("Broncos", "Denver Broncos") == 0.0
    assert exact_match("turkey", "türkiye<|answer_split|>Turkey") == 1.0
    with pytest.raises(ValueError):
        exact_match("x", [])


@pytest.mark.parametrize(
    "pred, golds, f1",
    [
        ("Denver Broncos", "Denver Broncos", 1.0),
        ("Broncos", "Denver Broncos", 2 * 1.0 * 0.5 / 1.5),  # p=1, r=1/2
        ("the Denver Broncos team", "Denver Broncos", 2 * (2 / 3) * 1.0 / (2 / 3 + 1)),
        ("Carolina Panthers", "Denver Broncos", 0.0),
        ("Broncos", ["Carolina Panthers", "Broncos"], 1.0),  # max over golds
        ("a a b", "a b b", 2 * 1.0 * 0.5 / 1.5),  # articles vanish: "b" vs "b b"
        ("b b", "b", 2 * 0.5 * 1.0 / 1.5),  # repeated tokens count once per match
        ("", "Denver", 0.0),
    ],
)
def test_f1(pred: str, golds: str | list[str], f1: float) -> None:
    assert f1_score(pred, golds) == pytest.approx(f1)


def test_score_response_em_and_f1() -> None:
    response = "<search>q</search>\n<information>Doc 1 x</information>\n<answer>Denver</answer>"
    r = score_response(response, "Denver Broncos", metric="f1", format_penalty=-2.0)
    assert r == Reward(outcome=pytest.approx(2 / 3), em=0.0, f1=pytest.approx(2 / 3),
                       answer="Denver", well_formed=True)  # fmt: skip
    r = score_response(response, "denver<|answer_split|>x", metric="em")
    assert (r.outcome, r.em, r.f1) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    "response", ["no tags", "<answer>unclosed", "<answer> </answer>", "<search>q</search>"]
)
def test_missing_or_malformed_answer_gets_the_penalty(response: str) -> None:
    r = score_response(response, "Denver", metric="f1", format_penalty=-2.0)
    assert (r.outcome, r.em, r.f1, r.well_formed) == (-2.0, 0.0, 0.0, False)


def test_blank_gold_entries_never_reward_an_empty_answer() -> None:
    # Search-R1's em_check would keep "" as a gold: "<answer></answer>" and "the" (which
    # normalizes to "") would then score 1. Blank entries are dropped instead.
    golds = "1999<|answer_split|>"
    assert split_golds(golds) == ["1999"]
    assert score_response("<answer>1999</answer>", golds).em == 1.0
    empty = score_response("<answer></answer>", golds, format_penalty=-1.0)
    assert (empty.outcome, empty.em, empty.well_formed) == (-1.0, 0.0, False)
    for blank_like in ("the", "?"):
        r = score_response(f"<answer>{blank_like}</answer>", golds, metric="em")
        assert (r.outcome, r.em, r.f1, r.well_formed) == (0.0, 0.0, 0.0, True)


@pytest.mark.parametrize("metric", ["em", "f1"])
def test_nested_answer_tags_are_malformed(metric: str) -> None:
    # Search-R1 extracts "a<answer>b" and its EM fails it; IGPO penalizes unbalanced tags.
    r = score_response("<answer>Denver<answer>Denver</answer>", "Denver", metric, -2.0)
    assert (r.outcome, r.em, r.f1, r.well_formed) == (-2.0, 0.0, 0.0, False)
    assert r.answer == "Denver<answer>Denver"
    later = score_response("<answer>x<answer>y</answer> <answer>Denver</answer>", "Denver", metric)
    assert (later.outcome, later.answer) == (1.0, "Denver")  # the last match is clean
    # An answer left unclosed by an earlier turn swallows the final one, as in Search-R1.
    turns = "<answer>Den" + "<think>retry</think><answer>Denver</answer>"
    assert score_response(turns, "Denver", metric, -2.0).outcome == -2.0


def test_one_answer_match_suffices() -> None:
    # Search-R1 wants two matches (its solution string holds the prompt's example); we
    # score the response alone.
    assert score_response("<answer>Denver</answer>", "Denver").outcome == 1.0


def test_score_response_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="no gold answers"):
        score_response("<answer>x</answer>", "")
    with pytest.raises(ValueError, match="metric"):
        score_response("<answer>x</answer>", "x", metric="acc")  # type: ignore[arg-type]
