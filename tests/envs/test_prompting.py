"""Prompt templates: rendering, instruction detection, template files, the IG answer
prefix, and a search-QA prompt pool on the shipped data as the policy will see it."""

from __future__ import annotations

import json

import pytest

from a2tgpo.config import RunConfig, StorageConfig
from a2tgpo.config_ops import apply_overrides
from a2tgpo.data.stage import read_manifest, read_stage
from a2tgpo.data.storage import Storage
from a2tgpo.envs.prompting import (
    COMPACT,
    IGPO,
    SEARCH_R1,
    TEMPLATES,
    PromptTemplate,
    answer_prefix,
    has_instruction,
    load_template,
    render_prompts,
    resolved_ig,
)
from a2tgpo.envs.synthetic import SyntheticWorld
from a2tgpo.stages.prepare import ensure_prompt_pool, environment_texts
from tests.search_qa_data import SEARCH_QA, needs_data

QUESTION = "Who wrote Hamlet?"


def bare_row(question: str = QUESTION, messages: list | None = None) -> dict:
    return {"question": question, "messages": messages or [{"role": "user", "content": question}]}


def test_builtins_render_the_question_where_their_format_puts_it():
    compact = COMPACT.messages(f"  {QUESTION}\n")
    assert compact == [
        {"role": "system", "content": COMPACT.instruction},
        {"role": "user", "content": QUESTION},
    ]
    (user,) = SEARCH_R1.messages(QUESTION)
    assert user["role"] == "user" and user["content"].endswith(f"Question: {QUESTION}\n")
    assert "<search> query </search>" in user["content"] and "<information>" in user["content"]
    system, question = IGPO.messages(QUESTION)
    assert system["role"] == "system" and "<search>" in system["content"]
    assert question == {"role": "user", "content": QUESTION}
    assert TEMPLATES["none"].messages(QUESTION) == [{"role": "user", "content": QUESTION}]


def test_a_question_with_braces_is_not_a_format_string():
    (user,) = SEARCH_R1.messages("What is {x} in f(x)={x}+1?")
    assert "What is {x} in f(x)={x}+1?" in user["content"]


def test_instruction_detection():
    assert not has_instruction([{"role": "user", "content": QUESTION}])
    assert has_instruction(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"}]
    )
    assert has_instruction(SEARCH_R1.messages(QUESTION))
    assert has_instruction([{"role": "user", "content": "Answer in <answer></answer>. q"}])


def test_render_prompts_leaves_instructed_prompts_alone_and_counts_them():
    instructed = SEARCH_R1.messages("Who painted it?")
    rows = [bare_row(), bare_row("Who painted it?", instructed)]
    counts = render_prompts(rows, COMPACT)
    assert counts == {"prompt_template": "compact", "templated": 1, "kept": 1}
    assert rows[0]["messages"] == COMPACT.messages(QUESTION)
    assert rows[1]["messages"] == instructed  # a second rendering is a no-op
    assert render_prompts(rows, COMPACT)["templated"] == 0


def test_template_none_keeps_every_prompt_as_given():
    rows = [
        bare_row(),
        bare_row("q", [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]),
    ]
    before = json.dumps(rows)
    assert render_prompts(rows, TEMPLATES["none"])["kept"] == 2
    assert json.dumps(rows) == before


def test_template_files(tmp_path):
    text = tmp_path / "mine.txt"
    text.write_text("Use <search>q</search> then <answer>a</answer>.\nQ: {question}")
    assert load_template(str(text)).messages("why?") == [
        {"role": "user", "content": "Use <search>q</search> then <answer>a</answer>.\nQ: why?"}
    ]
    structured = tmp_path / "mine.json"
    structured.write_text(
        json.dumps({"instruction": "Search, then answer.", "answer_prefix": "A: "})
    )
    template = load_template(str(structured))
    assert template.placement == "system" and template.answer_prefix == "A: "
    no_slot = tmp_path / "no-slot.txt"
    no_slot.write_text("Search, then answer.")
    with pytest.raises(ValueError, match="question"):
        load_template(str(no_slot))
    with pytest.raises(ValueError, match="neither a built-in"):
        load_template("search_r1")  # a typo of a built-in, and no such file
    bad = tmp_path / "bad.yaml"
    bad.write_text("prompt: hello\n")
    with pytest.raises(ValueError, match="instruction"):
        load_template(str(bad))
    with pytest.raises(ValueError, match="placement"):
        PromptTemplate("x", "i", "assistant")  # type: ignore[arg-type]


def test_ig_answer_prefix_follows_the_template_unless_set():
    config = RunConfig()
    assert config.ig.answer_prefix is None
    assert answer_prefix(config) == "<answer> "
    igpo = apply_overrides(config, ["env.prompt_template=igpo"])
    assert answer_prefix(igpo) == IGPO.answer_prefix == resolved_ig(igpo).answer_prefix
    mine = apply_overrides(igpo, ["ig.answer_prefix=Answer: "])
    assert answer_prefix(mine) == "Answer: "


def test_the_synthetic_world_prompts_and_teaches_with_the_configured_template():
    config = apply_overrides(RunConfig(), ["env.prompt_template=search-r1"])
    world = SyntheticWorld.from_config(config.env)
    row = world.to_prompts("train", 1)[0]
    assert row["messages"] == SEARCH_R1.messages(row["question"])
    assert any(SEARCH_R1.instruction.split("{question}")[0] in t for t in environment_texts(config))


@needs_data
def test_a_search_qa_pool_on_the_shipped_data_shows_the_policy_its_tools(tmp_path, tokenizer):
    config = apply_overrides(
        RunConfig(storage=StorageConfig(root=str(tmp_path))),
        [
            "env.kind=search_qa",
            f"env.dataset={SEARCH_QA / 'dev.parquet'}",
            "env.prompt_template=search-r1",
        ],
    )
    storage = Storage(config.storage)
    uri = ensure_prompt_pool(config, storage, "train", storage.join("pool"))
    stats = read_manifest(storage, uri).stats
    assert stats == {"prompts": 875, "prompt_template": "search-r1", "templated": 875, "kept": 0}
    pool = read_stage(storage, uri, "prompts")
    first = pool.slice(0, 1).to_pylist()[0]
    rendered = tokenizer.apply_chat_template(
        first["messages"], add_generation_prompt=True, tokenize=False
    )
    # what the rollout feeds the engine: the instruction, the tags, then the question
    assert "<search> query </search>" in rendered and "<answer>" in rendered
    assert rendered.index("<information>") < rendered.index(first["question"])
    assert rendered.endswith("<|im_start|>assistant\n")
