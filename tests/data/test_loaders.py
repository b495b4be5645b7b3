"""Loaders: the real verl / Search-R1 files, FlashRAG jsonl and parquet, bad rows."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from a2tgpo.data.loaders import LoaderError, load_flashrag, load_prompts, load_verl
from a2tgpo.data.schemas import PROMPTS
from a2tgpo.data.stage import read_stage, write_stage
from a2tgpo.data.storage import Storage
from a2tgpo.envs.rewards import split_golds
from tests.search_qa_data import SEARCH_QA, needs_data

SOURCES = ["2wiki", "Bamboogle", "hotpotqa", "musique", "nq", "popqa", "tq"]


@needs_data
@pytest.mark.parametrize(
    "split, per_source",
    [("dev", {s: 125 for s in SOURCES}), ("test", {s: 512 for s in SOURCES} | {"Bamboogle": 125})],
)
def test_real_verl_files(split, per_source):
    table = load_prompts(str(SEARCH_QA / f"{split}.parquet"))
    assert table.schema.equals(PROMPTS)
    assert Counter(table["data_source"].to_pylist()) == per_source
    assert len(set(table["prompt_id"].to_pylist())) == table.num_rows
    assert set(table["split"].to_pylist()) == {"dev"}  # test.parquet labels its rows "dev" too
    assert set(
        load_verl(str(SEARCH_QA / f"{split}.parquet"), split=split)["split"].to_pylist()
    ) == {split}
    raw = pq.read_table(SEARCH_QA / f"{split}.parquet").slice(0, 1).to_pylist()[0]
    first = table.slice(0, 1).to_pylist()[0]
    assert first["prompt_id"] == f"{raw['data_source']}-dev-{raw['extra_info']['index']}"
    assert first["question"] == raw["prompt"][0]["content"]
    assert first["messages"] == [
        {"role": m["role"], "content": m["content"]} for m in raw["prompt"]
    ]
    assert first["golds"] == raw["reward_model"]["ground_truth"].split("<|answer_split|>")


@needs_data
def test_filter_and_seeded_sample():
    path = str(SEARCH_QA / "dev.parquet")
    nq = load_verl(path, data_sources=["nq", "tq"])
    assert Counter(nq["data_source"].to_pylist()) == {"nq": 125, "tq": 125}
    first = load_verl(path, limit=10)
    assert first["prompt_id"].to_pylist() == load_verl(path)["prompt_id"].to_pylist()[:10]
    a, b = load_verl(path, limit=20, seed=1), load_verl(path, limit=20, seed=1)
    assert a.equals(b) and a.num_rows == 20
    assert not a.equals(load_verl(path, limit=20, seed=2))
    order = {pid: i for i, pid in enumerate(load_verl(path)["prompt_id"].to_pylist())}
    positions = [order[pid] for pid in a["prompt_id"].to_pylist()]
    assert positions == sorted(positions)  # a sample keeps file order


def test_verl_with_a_search_r1_template(tmp_path):
    template = (
        "Answer the given question. You must conduct reasoning inside <think> and </think> "
        "... For example, <answer> Beijing </answer>. Question: {q}\n"
    )
    rows = [
        {
            "data_source": "nq",
            "prompt": [{"content": template.format(q="who wrote hamlet?"), "role": "user"}],
            "ability": "fact-reasoning",
            "reward_model": {
                "ground_truth": {"target": ["Shakespeare", "William Shakespeare"]},
                "style": "rule",
            },
            "extra_info": {"index": 0, "split": "train"},
        }
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    (prompt,) = load_prompts(str(tmp_path / "train.parquet")).to_pylist()
    assert prompt["question"] == "who wrote hamlet?"
    assert prompt["messages"][0]["content"].startswith("Answer the given question.")
    assert prompt["golds"] == ["Shakespeare", "William Shakespeare"]
    assert prompt["prompt_id"] == "nq-train-0"
    assert json.loads(prompt["meta"]) == {"index": 0, "ability": "fact-reasoning", "style": "rule"}


def write_flashrag(path: Path) -> None:
    lines = [
        {
            "id": "q0",
            "question": "Capital of France?",
            "golden_answers": ["Paris"],
            "metadata": {"hops": 1},
        },
        {"id": "q1", "question": "Who wrote Hamlet?", "golden_answers": ["Shakespeare"]},
        {"id": "q2", "question": "", "golden_answers": ["x"]},  # bad: empty question
        {"id": "q3", "question": "Largest ocean?", "golden_answers": ["Pacific", "Pacific Ocean"]},
        {"id": "q4", "question": "No answer?", "golden_answers": []},  # bad: no gold
    ]
    text = "\n".join(json.dumps(line) for line in lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n{not json\n")  # bad: row 5 is not JSON


def test_flashrag_jsonl_raises_on_the_first_bad_row(tmp_path):
    write_flashrag(tmp_path / "nq" / "test.jsonl")
    with pytest.raises(
        LoaderError, match=r"test.jsonl, row 2: question must be a non-empty string"
    ):
        load_flashrag(str(tmp_path / "nq" / "test.jsonl"))


def test_flashrag_jsonl_skips_and_counts_bad_rows(tmp_path):
    write_flashrag(tmp_path / "nq" / "test.jsonl")
    skipped: list[str] = []
    table = load_prompts(str(tmp_path / "nq" / "test.jsonl"), on_error="skip", skipped=skipped)
    assert table["prompt_id"].to_pylist() == ["nq-test-q0", "nq-test-q1", "nq-test-q3"]
    assert [s.split(":")[0] for s in skipped] == ["row 2", "row 4", "row 5"]
    assert table.slice(2, 1).to_pylist()[0]["golds"] == ["Pacific", "Pacific Ocean"]
    assert json.loads(table["meta"][0].as_py()) == {"hops": 1}


def test_flashrag_parquet_and_wrong_types(tmp_path):
    rows = [
        {"id": "a", "question": "Q1?", "golden_answers": ["A1"]},
        {"id": "b", "question": "Q2?", "golden_answers": ["A2"]},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "dev.parquet")
    table = load_prompts(str(tmp_path / "dev.parquet"), data_source="hotpotqa")
    assert table["prompt_id"].to_pylist() == ["hotpotqa-dev-a", "hotpotqa-dev-b"]
    (tmp_path / "typed.jsonl").write_text(
        json.dumps({"id": "x", "question": "Q?", "golden_answers": [3]})
    )
    with pytest.raises(LoaderError, match="row 0: gold answers must be strings"):
        load_flashrag(str(tmp_path / "typed.jsonl"))


def test_golds_split_as_the_reward_splits_them(tmp_path):
    golds = [" Paris ", "", "Paris, France<|answer_split|>City of Light"]
    (tmp_path / "golds.jsonl").write_text(
        json.dumps({"id": "g", "question": "Q?", "golden_answers": golds})
    )
    table = load_flashrag(str(tmp_path / "golds.jsonl"))
    assert table["golds"].to_pylist() == [split_golds(golds)]
    assert split_golds(golds) == ["Paris", "Paris, France", "City of Light"]


def test_duplicate_ids_are_bad_rows(tmp_path):
    line = json.dumps({"id": "same", "question": "Q?", "golden_answers": ["A"]})
    (tmp_path / "dup.jsonl").write_text(f"{line}\n{line}\n")
    with pytest.raises(LoaderError, match="row 1: duplicate prompt_id"):
        load_flashrag(str(tmp_path / "dup.jsonl"))
    assert load_flashrag(str(tmp_path / "dup.jsonl"), on_error="skip").num_rows == 1


def test_loaded_prompts_commit_as_a_stage_and_load_from_the_store(storage_config, tmp_path):
    storage = Storage(storage_config)
    write_flashrag(tmp_path / "nq" / "test.jsonl")
    uri = storage.join("data", "nq", "test.jsonl")
    storage.upload(str(tmp_path / "nq" / "test.jsonl"), uri)
    table = load_flashrag(uri, storage=storage, on_error="skip")
    assert table.num_rows == 3
    stage = storage.stage_uri("run", 0, "prompts")
    write_stage(storage, stage, table, "prompts", parents=[uri])
    assert read_stage(storage, stage).equals(table)


def _verl_row(question: str, gold: str = "A", index: int = 0) -> dict:
    return {
        "data_source": "nq",
        "prompt": [{"content": question, "role": "user"}],
        "reward_model": {"ground_truth": gold, "style": "rule"},
        "extra_info": {"index": index, "split": "train"},
    }


@pytest.mark.parametrize(
    "lines, options, why",
    [
        ([], {}, "the file has no rows"),
        ([{"id": "a", "question": "", "golden_answers": ["x"]}], {"on_error": "skip"},
         "all 1 rows were bad"),
        ([{"id": "a", "question": "Q?", "golden_answers": ["x"]}], {"data_sources": ["hotpotqa"]},
         "no row of data sources"),
    ],
)  # fmt: skip
def test_an_empty_result_is_a_loader_error(tmp_path, lines, options, why):
    path = tmp_path / "nq" / "train.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(LoaderError, match=rf"train.jsonl: no prompts \({why}"):
        load_flashrag(str(path), **options)


def test_an_empty_verl_parquet_is_a_loader_error(tmp_path):
    empty = pa.Table.from_pylist([_verl_row("Q?")]).slice(0, 0)
    pq.write_table(empty, tmp_path / "train.parquet")
    with pytest.raises(LoaderError, match="no prompts"):
        load_prompts(str(tmp_path / "train.parquet"))


def test_questions_and_golds_over_their_caps_are_bad_rows(tmp_path):
    rows = [_verl_row("Q?"), _verl_row("x" * 101, index=1), _verl_row("Q?", "g" * 51, index=2)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    caps = {"max_question_chars": 100, "max_gold_chars": 50}
    with pytest.raises(LoaderError, match=r"row 1: question has 101 characters; the limit is 100"):
        load_verl(str(tmp_path / "train.parquet"), **caps)
    skipped: list[str] = []
    table = load_verl(str(tmp_path / "train.parquet"), on_error="skip", skipped=skipped, **caps)
    assert table["prompt_id"].to_pylist() == ["nq-train-0"]
    assert skipped == [
        "row 1: question has 101 characters; the limit is 100 (env.max_question_chars)",
        "row 2: gold answers have 51 characters; the limit is 50 (env.max_gold_chars)",
    ]
