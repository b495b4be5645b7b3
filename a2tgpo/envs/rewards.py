"""Outcome rewards for search QA (spec "Rewards (search QA)").

The answer is what Search-R1's scorer extracts (verl/utils/reward_score/qa_em.py:
the last `<answer>(.*?)</answer>` match, `parser.extract_answer`). Answers and
golds are normalized as in the SQuAD v1.1 evaluation script and Search-R1's
`normalize_answer` (lowercase, drop punctuation, drop the articles a/an/the,
collapse whitespace); EM (`em_check`) and token F1 are the max over the golds.
Gold answers arrive joined by `<|answer_split|>` (verl / Search-R1 parquet) or
as a list. A missing, empty or nested answer scores `format_penalty` as the
outcome, with EM = F1 = 0.

Where we follow or leave Search-R1 / IGPO (verl/utils/reward_score/info_gain.py):
- Search-R1 needs two matches, since its solution string includes the prompt,
  whose instructions hold an example `<answer>`. We score the response only
  (the agent's turns, `Episode.response_text`), so one match is an answer.
- Nested tags: `<answer>a<answer>b</answer>` extracts "a<answer>b", as Search-R1
  does, which its EM then fails (0). We call it malformed instead, which is the
  same 0 at `format_penalty` 0 and IGPO's -2 under its setting (IGPO penalizes any
  response whose `<answer>` and `</answer>` counts differ). This includes an
  `<answer>` left unclosed in an earlier (invalid) turn: the regex pairs it with
  the final turn's `</answer>`, in Search-R1 as here.
- Blank gold entries (`"1999<|answer_split|>"`) are dropped, deliberately. Search-R1's
  `em_check` would keep "" as a gold, which an empty answer, or one that normalizes
  to "" ("the", "?"), matches for a full reward (IGPO's EM likewise matches an empty
  answer; its F1 skips blank golds). Here an empty answer is malformed and a blank
  gold matches nothing.

Edge semantics follow SQuAD v1.1: two answers that both normalize to the empty
string are an exact match (EM 1) but share no tokens (F1 0); golds like "A" (an
option letter) normalize to "" that way.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from a2tgpo.envs.parser import extract_answer

ANSWER_SPLIT = "<|answer_split|>"
_NESTED = "<answer>"  # inside an extracted answer only when tags were nested

_PUNCT = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")

Golds = str | Iterable[str]


@dataclass(frozen=True)
class Reward:
    """The outcome of one response. `answer` is None when no complete answer tag was found."""

    outcome: float
    em: float
    f1: float
    answer: str | None
    well_formed: bool


def normalize_answer(s: str) -> str:
    """SQuAD normalization: lowercase, strip punctuation and articles, collapse whitespace."""
    s = s.lower().translate(_PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def split_golds(golds: Golds) -> list[str]:
    """Gold answers as a list: a `<|answer_split|>`-joined string, or a list/array of them.

    Blank entries are dropped (see the module docstring: Search-R1 would keep them,
    and an empty answer would match). Raises ValueError when nothing is left, since
    a reward against no gold is meaningless and would silently score 0. The dataset
    loaders (a2tgpo.data.loaders) split golds with this function too.
    """
    items: Iterable[object] = [golds] if isinstance(golds, str | bytes) else golds
    out: list[str] = []
    for item in items:
        if isinstance(item, bytes):
            item = item.decode("utf-8", errors="replace")
        if not isinstance(item, str):
            raise TypeError(f"gold answers must be strings, got {type(item).__name__}")
        out.extend(g.strip() for g in item.split(ANSWER_SPLIT) if g.strip())
    if not out:
        raise ValueError(f"no gold answers in {golds!r}")
    return out


def _f1_one(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    common = Counter(pred_tokens) & Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(pred: str, golds: Golds) -> float:
    """1.0 if the normalized prediction equals any normalized gold, else 0.0."""
    p = normalize_answer(pred)
    return float(any(p == normalize_answer(g) for g in split_golds(golds)))


def f1_score(pred: str, golds: Golds) -> float:
    """SQuAD token F1 of the prediction, max over golds."""
    p = normalize_answer(pred).split()
    return max(_f1_one(p, normalize_answer(g).split()) for g in split_golds(golds))


def score_response(
    response_text: str | bytes,
    golds: Golds,
    metric: Literal["em", "f1"] = "em",
    format_penalty: float = 0.0,
) -> Reward:
    """Score a whole response (all turns): outcome = EM or F1, or the penalty if ill-formed.

    Ill-formed: no answer match, an empty one, or a nested one (its content holds an
    `<answer>` tag). `Reward.answer` keeps what was extracted, for the logs.
    """
    if metric not in ("em", "f1"):
        raise ValueError(f"metric must be 'em' or 'f1', got {metric!r}")
    gold_list = split_golds(golds)  # validate first: an empty gold is an error either way
    answer = extract_answer(response_text)
    if not answer or _NESTED in answer:
        return Reward(float(format_penalty), 0.0, 0.0, answer, False)
    em = exact_match(answer, gold_list)
    f1 = f1_score(answer, gold_list)
    return Reward(em if metric == "em" else f1, em, f1, answer, True)
