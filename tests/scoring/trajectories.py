"""Hand-built TRAJECTORIES rows and probe sets for the scoring tests.

`trajectory_row` lays out a conversation the way the rollout agent does (ChatML
prompt, then per turn the generated tokens and, except after the terminal turn, an
observation) and returns one row of the TRAJECTORIES schema.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from a2tgpo.data.schemas import TRAJECTORIES
from a2tgpo.scoring.probes import build_probe_sets, probe_tokens

ANSWER_PREFIX = "<answer> "


def trajectory_row(
    tokenizer,
    trajectory_id: str,
    golds: list[str],
    turns: list[tuple[str, str, str | None]],
    finish_reason: str = "answer",
) -> dict:
    """turns: (action, generated text, observation text or None) per turn."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": f"Question {trajectory_id}: who is the mother of Alice?"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    tokens = tokenizer.encode(prompt)
    mask = [0] * len(tokens)
    spans = []
    for k, (action, text, observation) in enumerate(turns):
        start = len(tokens)
        generated = tokenizer.encode(text)
        tokens += generated
        mask += [1] * len(generated)
        end = len(tokens)
        if observation is not None:
            seen = tokenizer.encode(f"<information>{observation}</information>")
            tokens += seen
            mask += [0] * len(seen)
        spans.append(
            dict(turn=k, start=start, end=end, obs_start=end, obs_end=len(tokens), action=action)
        )
        spans[-1]["query"] = text if action == "search" else None
    return {
        "prompt_id": trajectory_id.split("/")[0],
        "trajectory_id": trajectory_id,
        "sample_index": 0,
        "policy_version": 0,
        "data_source": "test",
        "golds": golds,
        "token_ids": tokens,
        "loss_mask": mask,
        "prompt_length": spans[0]["start"] if spans else len(tokens),
        "turns": spans,
        "answer": None,
        "outcome": 0.0,
        "em": 0.0,
        "f1": 0.0,
        "finish_reason": finish_reason,
        "sampling": dict(temperature=1.0, top_p=1.0, max_turn_tokens=64, seed=0, engine="hf"),
        "rollout_logprobs": [0.0] * len(tokens),
    }


SEARCH = "<think>I need the mother of Alice Smith.</think> <search>Alice Smith mother</search>"
DOC = "Doc 1: Alice Smith was born in Paris. Her mother is Carol Jones."
ANSWER = "<think>Carol Jones is the mother.</think> <answer>Carol Jones</answer>"


def trajectories_table(tokenizer) -> pa.Table:
    """Assorted trajectories: several turns, one turn, truncated, several golds, no gold."""
    rows = [
        trajectory_row(
            tokenizer,
            "q1/0",
            ["Carol Jones", "Carol"],
            [
                ("search", SEARCH, DOC),
                ("search", SEARCH, "Bob Brown's father is Dan Brown."),
                ("answer", ANSWER, None),
            ],
        ),
        trajectory_row(tokenizer, "q1/1", ["Carol Jones", "Carol"], [("answer", ANSWER, None)]),
        trajectory_row(
            tokenizer,
            "q2/0",
            ["Paris"],
            [("search", SEARCH, DOC), ("truncated", "<think>Alice Smith was born", None)],
            finish_reason="max_tokens",
        ),
        trajectory_row(tokenizer, "q3/0", [], [("search", SEARCH, DOC), ("answer", ANSWER, None)]),
        trajectory_row(
            tokenizer, "q4/0", ["  "], [("search", SEARCH, DOC), ("answer", ANSWER, None)]
        ),
    ]
    return pa.Table.from_pylist(rows, schema=TRAJECTORIES)


def random_probe_sets(tokenizer, seed: int, count: int = 6, max_length: int = 300):
    """Random-token trajectories of 2-6 turns, one gold each (tokenized after the prefix)."""
    rng = np.random.default_rng(seed)
    golds = ["Carol Jones", "Paris", "Dan Brown", "Zürich", "12345"]
    sets = []
    for _ in range(count):
        length = int(rng.integers(40, max_length))
        tokens = rng.integers(0, len(tokenizer), size=length)
        turns = int(rng.integers(2, 7))
        boundaries = sorted(rng.choice(np.arange(8, length), size=turns, replace=False).tolist())
        probe = probe_tokens(tokenizer, ANSWER_PREFIX, str(rng.choice(golds)))
        sets += build_probe_sets(tokens, boundaries, [probe])
    return sets


def edge_probe_sets(tokenizer, limit: int):
    """1 turn; truncated; two golds; probes at and past `limit`; a gold with no prefix."""
    rng = np.random.default_rng(99)
    tokens = rng.integers(0, len(tokenizer), size=limit + 8)
    carol = probe_tokens(tokenizer, ANSWER_PREFIX, "Carol Jones")
    paris = probe_tokens(tokenizer, ANSWER_PREFIX, "Paris")
    bare = probe_tokens(tokenizer, "", "Dan Brown")
    at_limit = limit - len(carol[0])  # boundary whose probe ends exactly at the limit
    return [
        *build_probe_sets(tokens[:30], [12], [carol]),
        *build_probe_sets(tokens, [20, 60, 90], [carol]),
        *build_probe_sets(tokens[:120], [10, 50, 100], [carol, paris]),
        *build_probe_sets(tokens, [40, at_limit - 1, at_limit, at_limit + 1], [carol]),
        *build_probe_sets(tokens[:80], [15, 70], [bare]),
    ]
