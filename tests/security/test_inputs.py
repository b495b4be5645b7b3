"""Empty and oversized inputs: clear errors or counted skips, never a committed empty
pool, a 50 MB prompt or a crash deep inside DeepSpeed."""

from __future__ import annotations

import json
import logging
import time

import pyarrow as pa
import pytest

from a2tgpo.config import RunConfig
from a2tgpo.data.fakes import fake_prompts, fake_trajectories
from a2tgpo.data.loaders import LoaderError
from a2tgpo.data.schemas import schema_for
from a2tgpo.data.stage import read_manifest, read_stage, write_stage
from a2tgpo.data.storage import Storage
from a2tgpo.stages import train_step
from a2tgpo.stages.advantages import run_advantages
from a2tgpo.stages.prepare import (
    ensure_prompt_pool,
    environment_texts,
    prompt_pool_table,
    sample_prompts,
)

GOOD = [{"id": i, "question": f"Question {i}?", "golden_answers": ["A"]} for i in range(3)]


def _write_jsonl(path, rows) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _search_qa(tmp_path, train_rows, **env) -> RunConfig:
    train = _write_jsonl(tmp_path / "data" / "train.jsonl", train_rows)
    test = _write_jsonl(tmp_path / "data" / "test.jsonl", GOOD)
    env = {"kind": "search_qa", "dataset": train, "eval_dataset": test} | env
    return RunConfig.model_validate({"storage": {"root": str(tmp_path / "store")}, "env": env})


def test_an_empty_dataset_commits_no_pool_and_the_fixed_file_is_used(tmp_path) -> None:
    config = _search_qa(tmp_path, [])
    storage = Storage(config.storage)
    uri = storage.join("run", "prompts-train")
    with pytest.raises(LoaderError, match=r"train.jsonl: no prompts \(the file has no rows\)"):
        ensure_prompt_pool(config, storage, "train", uri)
    assert read_manifest(storage, uri) is None  # nothing to shadow the fixed file
    _write_jsonl(tmp_path / "data" / "train.jsonl", GOOD)
    ensure_prompt_pool(config, storage, "train", uri)
    assert read_manifest(storage, uri).stats["prompts"] == 3


def test_the_tokenizer_is_never_trained_on_an_empty_dataset(tmp_path) -> None:
    config = _search_qa(tmp_path, [])
    with pytest.raises(LoaderError, match="no prompts"):
        environment_texts(config)


def test_an_empty_committed_pool_is_refused_by_the_sample(tmp_path) -> None:
    config = _search_qa(tmp_path, GOOD)
    storage = Storage(config.storage)
    pool, out = storage.join("run", "prompts-eval"), storage.join("run", "eval-prompts")
    write_stage(storage, pool, fake_prompts(0), "prompts")  # as an earlier version committed
    with pytest.raises(ValueError, match=r"prompt pool .*prompts-eval is empty"):
        sample_prompts(config, pool_uri=pool, out_uri=out, count=4, seed=0)
    assert read_manifest(storage, out) is None


def test_a_50_mb_question_is_refused_quickly(tmp_path) -> None:
    huge = {"id": "big", "question": "why?" * (50 * 2**20 // 4), "golden_answers": ["A"]}
    config = _search_qa(tmp_path, [*GOOD, huge])
    start = time.monotonic()
    with pytest.raises(LoaderError, match=r"row 3: question has 52428800 characters"):
        prompt_pool_table(config, "train")
    assert time.monotonic() - start < 60  # seconds, not the minutes of tokenizing it


def test_the_configured_caps_reach_the_loader(tmp_path) -> None:
    rows = [*GOOD, {"id": "long", "question": "x" * 101, "golden_answers": ["A"]}]
    with pytest.raises(LoaderError, match="row 3: question has 101 characters; the limit is 100"):
        prompt_pool_table(_search_qa(tmp_path, rows, max_question_chars=100), "train")
    golds = [*GOOD, {"id": "gold", "question": "Q?", "golden_answers": ["g" * 51]}]
    with pytest.raises(LoaderError, match="row 3: gold answers have 51 characters"):
        prompt_pool_table(_search_qa(tmp_path, golds, max_gold_chars=50), "train")


def _without_turns(rows: int, schema_name: str, keep: int = 0) -> pa.Table:
    """`rows` trajectories of which all but the first `keep` have no turn (prompts that
    left no room for one: what rollouts committed before such prompts were skipped)."""
    table = fake_trajectories(rows, tokens=64, turns=2, schema_name=schema_name, vocab=300)
    out = table.to_pylist()
    for row in out[keep:]:
        row["turns"], row["loss_mask"] = [], [0] * len(row["token_ids"])
        row["rollout_logprobs"] = [0.0] * len(row["token_ids"])
    return pa.Table.from_pylist(out, schema=schema_for(schema_name))


def test_train_step_refuses_a_dataset_without_trainable_tokens(tmp_path, monkeypatch) -> None:
    config = RunConfig.model_validate({"storage": {"root": str(tmp_path / "store")}})
    storage = Storage(config.storage)
    uri = storage.join("run", "advantaged")
    write_stage(storage, uri, _without_turns(4, "advantaged"), "advantaged")

    def must_not_launch(*args, **kwargs):
        raise AssertionError("the workers were launched")

    monkeypatch.setattr(train_step, "train_and_commit", must_not_launch)
    with pytest.raises(ValueError) as error:
        train_step.run_train_step(
            config, advantaged_uri=uri, policy_uri="unused", out_uri=uri + "-ckpt", policy_version=1
        )
    message = str(error.value)
    assert "no trainable tokens" in message and "4 trajectories" in message
    assert "\n" not in message and message.count(". ") == 0  # one sentence


def test_advantages_warn_about_trajectories_without_turns(tmp_path, caplog) -> None:
    config = RunConfig.model_validate({"storage": {"root": str(tmp_path / "store")}})
    storage = Storage(config.storage)
    scored, out = storage.join("run", "scored"), storage.join("run", "advantaged")
    write_stage(storage, scored, _without_turns(4, "scored", keep=1), "scored")
    with caplog.at_level(logging.WARNING):
        manifest = run_advantages(config, scored_uri=scored, out_uri=out)
    assert manifest.stats["trajectories_without_turns"] == 3
    assert "3 of 4 trajectories have no turns" in caplog.text
    assert read_stage(storage, out, "advantaged").num_rows == 4
