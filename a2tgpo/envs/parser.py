"""Parse the agent's tags: one turn's action, and the final answer of a whole response.

The agent writes Search-R1-style tags. A turn is optional reasoning in
`<think>...</think>`, then one action: `<search>query</search>` or
`<answer>text</answer>`.

`parse_action` rule, applied to the tag events of the turn in order of position
(a tag is one of the six exact, lowercase strings `<think>`, `</think>`,
`<search>`, `</search>`, `<answer>`, `</answer>`):

1. Outside any block, `<think>` opens a think block; it ends at the next
   `</think>`. Tags inside a think block are reasoning and are ignored. A think
   block that never closes makes the turn invalid.
2. Outside any block, the first `<search>` or `<answer>` opens the action. The
   very next tag must be its own closing tag; anything else (another opening
   tag, a different closing tag) is a nested or interleaved action: invalid.
   No closing tag at all: invalid (unclosed).
3. The action's content is the text between the two tags, stripped. Empty
   content is invalid. A search query is cut to `max_query_chars`.
4. Stray closing tags outside any block are ignored (e.g. a `</think>` whose
   `<think>` was in the prompt), and so is all text after the action closes
   (what a model writes past its stop string is never an action).
5. No action tag at all: invalid.

`extract_answer` (the reward's view of a whole response, spec "Rewards") returns
what Search-R1's scorer extracts (verl/utils/reward_score/qa_em.py,
`extract_solution`): the last match of `re.finditer(r"<answer>(.*?)</answer>",
re.DOTALL)`, stripped. Matches pair the leftmost `<answer>` with the next
`</answer>`, so a nested `<answer>` is content: `<answer>a<answer>b</answer>`
gives "a<answer>b" (the reward then treats it as malformed, `rewards.py`).

Both work on a list of tag events found by one literal-alternation regex, so
they run in linear time on any input (no backtracking, no nested scanning), and
they never raise on str, bytes or None: bytes are decoded with replacement, and
lone surrogates and NUL characters are replaced in what they return. That holds
by construction, not by catching: a bug here crashes rather than passing as a
malformed turn or a format penalty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

DEFAULT_MAX_QUERY_CHARS = 512

# One alternation of literals: the regex engine tries it at each position once, so
# finditer is linear in the input even on megabytes of tag soup.
_TAG = re.compile(r"<(/?)(think|search|answer)>")


@dataclass(frozen=True)
class Action:
    """The decided action of one turn. `content` is None when `kind` is "invalid"."""

    kind: Literal["search", "answer", "invalid"]
    content: str | None = None
    reason: str = ""  # why a turn is invalid (for logs); empty otherwise


def _as_text(text: str | bytes | bytearray | None) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes | bytearray):
        return bytes(text).decode("utf-8", errors="replace")
    return str(text)


def _clean(content: str) -> str:
    """Make content safe to encode and to send anywhere: no surrogates, no NUL."""
    content = content.encode("utf-8", errors="replace").decode("utf-8")
    return content.replace("\x00", "\ufffd")


def _events(text: str) -> list[tuple[int, int, bool, str]]:
    """(start, end, is_closing, name) of every tag in the text, in order."""
    return [(m.start(), m.end(), m.group(1) == "/", m.group(2)) for m in _TAG.finditer(text)]


def _invalid(reason: str) -> Action:
    return Action("invalid", None, reason)


def parse_action(
    turn_text: str | bytes | None, max_query_chars: int = DEFAULT_MAX_QUERY_CHARS
) -> Action:
    """Decide the action of one assistant turn (rule in the module docstring)."""
    return _parse_action(_as_text(turn_text), max_query_chars)


def _parse_action(text: str, max_query_chars: int) -> Action:
    events = _events(text)
    i = 0
    while i < len(events):
        _, end, closing, name = events[i]
        if closing:
            i += 1  # stray closing tag outside any block
            continue
        if name == "think":
            i = _skip_think(events, i + 1)
            if i < 0:
                return _invalid("unclosed think")
            continue
        if i + 1 >= len(events):
            return _invalid(f"unclosed {name}")
        nxt_start, _, nxt_closing, nxt_name = events[i + 1]
        if not (nxt_closing and nxt_name == name):
            return _invalid(f"nested or interleaved tags in {name}")
        content = _clean(text[end:nxt_start]).strip()
        if not content:
            return _invalid(f"empty {name}")
        if name == "search":
            content = content[: max(1, max_query_chars)].strip()
        return Action(name, content)  # type: ignore[arg-type]
    return _invalid("no action tag")


def _skip_think(events: list[tuple[int, int, bool, str]], i: int) -> int:
    """Index of the event after the `</think>` that closes a block opened before i; -1 if none."""
    while i < len(events):
        _, _, closing, name = events[i]
        if closing and name == "think":
            return i + 1
        i += 1
    return -1


def extract_answer(text: str | bytes | None) -> str | None:
    """Stripped content of the last `<answer>(.*?)</answer>` match; None if there is none.

    Search-R1's non-overlapping lazy matches, found on the tag events in linear time:
    an open `<answer>` takes everything up to the next `</answer>`, inner `<answer>`
    tags included; a `</answer>` with no open `<answer>` is skipped. The content may
    be empty (""); callers decide whether that counts as an answer.
    """
    text = _as_text(text)
    opened: int | None = None  # end of the open `<answer>`
    last: tuple[int, int] | None = None
    for start, end, closing, name in _events(text):
        if name != "answer":
            continue
        if not closing and opened is None:
            opened = end
        elif closing and opened is not None:
            last, opened = (opened, start), None
    return None if last is None else _clean(text[last[0] : last[1]]).strip()
