"""The tag parser: the documented rule on known cases, then fuzzing for never-raise/linear time."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from a2tgpo.envs import parser
from a2tgpo.envs.parser import Action, extract_answer, parse_action


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<search>Vorn Kadel</search>", Action("search", "Vorn Kadel")),
        ("<think>who?</think>\n<search>  Vorn Kadel \n</search>", Action("search", "Vorn Kadel")),
        ("<answer>Teslin</answer>", Action("answer", "Teslin")),
        ("<think>maybe <answer>x</answer></think><answer>y</answer>", Action("answer", "y")),
        ("<think>a</think><think>b</think><search>q</search>", Action("search", "q")),
        ("I reason. </think><search>q</search>", Action("search", "q")),  # stray </think>
        ("</search><search>q</search>", Action("search", "q")),  # stray closing tag
        ("<search>q</search><answer>a</answer>", Action("search", "q")),  # first action wins
        ("<answer>a</answer><search>q</search>", Action("answer", "a")),
        ("<search>q</search><information>fake", Action("search", "q")),  # text after ignored
    ],
)
def test_valid_actions(text: str, expected: Action) -> None:
    assert parse_action(text) == expected


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "no action tag"),
        ("just text", "no action tag"),
        ("<search>unclosed", "unclosed search"),
        ("<answer>unclosed", "unclosed answer"),
        ("<think>never ends <search>q</search>", "unclosed think"),
        ("<search></search>", "empty search"),
        ("<answer>  \n </answer>", "empty answer"),
        ("<search>a<search>b</search></search>", "nested or interleaved tags in search"),
        ("<search>a<answer>b</answer>", "nested or interleaved tags in search"),
        ("<answer>a</search>", "nested or interleaved tags in answer"),
        ("<answer>unclosed <search>q</search>", "nested or interleaved tags in answer"),
        ("<SEARCH>q</SEARCH>", "no action tag"),  # tags are exact and lowercase
    ],
)
def test_invalid_actions(text: str, reason: str) -> None:
    action = parse_action(text)
    assert action.kind == "invalid" and action.content is None
    assert action.reason == reason


def test_query_is_length_capped() -> None:
    action = parse_action("<search>" + "x" * 5000 + "</search>", max_query_chars=512)
    assert action == Action("search", "x" * 512)


def test_bytes_and_bad_unicode_are_accepted() -> None:
    assert parse_action(b"<search>caf\xc3\xa9 \xff</search>") == Action("search", "café \ufffd")
    action = parse_action("<search>a\ud800b\x00c</search>")  # lone surrogate, NUL
    assert action.kind == "search"
    action.content.encode("utf-8")  # safe to send anywhere
    assert "\x00" not in action.content


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<search>q</search>\n<information>x</information>\n<answer> Teslin </answer>", "Teslin"),
        ("<answer>a</answer> then <answer>b</answer>", "b"),
        ("<answer>a</answer> then <answer>b", "a"),  # the last *complete* pair
        ("<answer>a<answer>b</answer>", "a<answer>b"),  # Search-R1: nested tag is content
        ("<answer>a<answer>b</answer><answer>c</answer>", "c"),
        ("<answer>a</answer><answer>b<answer>c</answer>", "b<answer>c"),
        ("<answer>a</answer></answer>", "a"),
        ("<answer></answer>", ""),
        ("no answer", None),
        ("</answer><answer>", None),
        ("<answer>unclosed", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected
    assert extract_answer(text.encode()) == expected
    assert extract_answer(text) == _search_r1_extract(text)


def _search_r1_extract(text: str) -> str | None:
    """Search-R1's `extract_solution` (verl/utils/reward_score/qa_em.py) on a response
    alone (one match suffices: no prompt example to skip), cleaned as ours is."""
    matches = re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)
    return parser._clean(matches[-1]).strip() if matches else None


# ---- fuzzing ----------------------------------------------------------------------------

_FRAGMENTS = [
    "<think>", "</think>", "<search>", "</search>", "<answer>", "</answer>",
    "<information>", "</information>", "<", ">", "/", "search", "answer", "think",
    "<search", "answer>", "</", " ", "\n", "Vorn Kadel", "x", "\x00", "\ud800", "é",
]  # fmt: skip

tag_soup = st.lists(st.sampled_from(_FRAGMENTS), max_size=60).map("".join)


def _check(action: Action) -> None:
    assert action.kind in ("search", "answer", "invalid")
    if action.kind == "invalid":
        assert action.content is None
    else:
        assert action.content and action.content == action.content.strip()
        action.content.encode("utf-8")
        assert "<search>" not in action.content and "</search>" not in action.content


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_arbitrary_text_never_raises(text: str) -> None:
    _check(parse_action(text))
    answer = extract_answer(text)
    assert answer is None or isinstance(answer, str)


@settings(max_examples=600, deadline=None)
@given(tag_soup)
def test_tag_soup_never_raises(text: str) -> None:
    action = parse_action(text)
    _check(action)
    if action.kind == "search":
        assert len(action.content) <= 512
    answer = extract_answer(text)
    if answer is not None:
        answer.encode("utf-8")


@settings(max_examples=600, deadline=None)
@given(tag_soup)
def test_extract_answer_is_search_r1s_regex(text: str) -> None:
    assert extract_answer(text) == _search_r1_extract(text)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    _check(parse_action(data))
    extract_answer(data)


@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
@given(tag_soup.filter(bool))
def test_huge_inputs_are_linear(unit: str) -> None:
    text = unit * (2_000_000 // len(unit) + 1)  # 2 MB+ of repeated soup
    start = time.perf_counter()
    _check(parse_action(text))
    extract_answer(text)
    assert time.perf_counter() - start < 3.0


@pytest.mark.parametrize(
    "text",
    [
        "<answer>" * 300_000,  # every start would scan to the end with a lazy regex
        "<think>" + "<search>" * 300_000,
        "<search>" + "x" * 2_000_000,
        "</think>" * 300_000 + "<search>q</search>",
    ],
)
def test_adversarial_inputs_are_fast(text: str) -> None:
    start = time.perf_counter()
    parse_action(text)
    extract_answer(text)
    assert time.perf_counter() - start < 2.0


def test_a_bug_in_the_parser_crashes_instead_of_scoring_a_format_penalty(monkeypatch) -> None:
    # Valid input never raises (above); an exception can only be a bug, and a bug must
    # surface, not pass as a malformed turn or a missing answer.
    def broken(text: str) -> list:
        raise RuntimeError("bug in tag scanning")

    monkeypatch.setattr(parser, "_events", broken)
    with pytest.raises(RuntimeError, match="bug in tag scanning"):
        extract_answer("<answer>Teslin</answer>")
    with pytest.raises(RuntimeError, match="bug in tag scanning"):
        parse_action("<search>q</search>")
