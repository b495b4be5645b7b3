"""The agent's instructions and the text around tool observations.

One system prompt serves the synthetic world and search QA alike, so a policy
warm-started on synthetic demonstrations sees the same format in RL and on real
benchmarks. It is short on purpose: every prompt token costs context in a tiny
model with a 2k window.
"""

from __future__ import annotations

SYSTEM_PROMPT = (
    "Answer the question. To look something up, write <search>query</search>; "
    "the results come back in <information>...</information>. "
    "Search as often as you need, then give the final answer as <answer>answer</answer>."
)

OBSERVATION_OPEN = "\n<information>"
OBSERVATION_CLOSE = "</information>\n"


def build_messages(question: str, system_prompt: str = SYSTEM_PROMPT) -> list[dict[str, str]]:
    """Chat messages of a prompt: the system instruction, then the question as the user turn."""
    return [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": question.strip()},
    ]


def wrap_observation(text: str) -> str:
    """The observation as the loop appends it after a search turn (Search-R1 format)."""
    return f"{OBSERVATION_OPEN}{text}{OBSERVATION_CLOSE}"
