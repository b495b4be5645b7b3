"""score_trajectories and the score-ig stage on a hand-built TRAJECTORIES table.

v is checked against a plain forward over context + probe (spec section 1), IG
against f(v of the next turn) - f(v), and the stage end to end on a local store.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from a2tgpo.config import IGConfig, RunConfig, StorageConfig
from a2tgpo.data.stage import read_manifest, read_stage, write_stage
from a2tgpo.data.storage import Storage
from a2tgpo.envs.prompting import resolved_ig
from a2tgpo.scoring.naive import NaiveScorer
from a2tgpo.scoring.packed import PackedScorer
from a2tgpo.scoring.probes import probe_tokens
from a2tgpo.scoring.trajectories import ig_stats, score_trajectories
from a2tgpo.stages.score_ig import run_score_ig
from tests.scoring.trajectories import ANSWER_PREFIX, trajectories_table

F = {"prob_diff": math.exp, "log_prob_diff": lambda x: x}


@pytest.fixture(scope="module")
def table(tokenizer):
    return trajectories_table(tokenizer)


def reference_v(model, tokenizer, tokens: list[int], boundary: int, gold: str) -> float:
    """Mean log-prob of the gold's tokens after tokens[:boundary] + prefix, by hand."""
    ids, offset = probe_tokens(tokenizer, ANSWER_PREFIX, gold)
    sequence = torch.tensor(tokens[:boundary] + ids).unsqueeze(0)
    with torch.no_grad():
        logp = torch.log_softmax(model(sequence).logits[0].float(), -1)
    first = boundary + offset  # position of the first gold token
    return float(
        np.mean([logp[j - 1, sequence[0, j]].item() for j in range(first, sequence.shape[1])])
    )


@pytest.mark.parametrize("mode", ["prob_diff", "log_prob_diff"])
def test_ig_is_f_of_next_v_minus_f_of_v(hf_model, tokenizer, table, mode):
    scored = score_trajectories(
        table, PackedScorer(hf_model), tokenizer, IGConfig(mode=mode, answer_prefix=ANSWER_PREFIX)
    )
    assert scored.schema.metadata[b"a2tgpo.schema"] == b"scored"
    f = F[mode]
    for row in scored.to_pylist():
        turns = row["turns"]
        assert turns[-1]["ig"] is None  # the terminal turn has no IG
        if not [g for g in row["golds"] if g.strip()]:
            assert all(t["v"] is None and t["ig"] is None for t in turns)
            continue
        for k, t in enumerate(turns):
            want = reference_v(hf_model, tokenizer, row["token_ids"], t["start"], row["golds"][0])
            assert t["v"] == pytest.approx(want, abs=1e-4)
            if k + 1 < len(turns):
                assert t["ig"] == pytest.approx(f(turns[k + 1]["v"]) - f(t["v"]), abs=1e-12)


def test_no_gold_and_probes_past_the_limit_give_no_ig(hf_model, tokenizer, table):
    by_id = {r["trajectory_id"]: r for r in table.to_pylist()}
    three_turns = by_id["q1/0"]["turns"]
    # A limit that leaves out only the probe after turn 2's boundary (the last one).
    limit = three_turns[2]["start"] + 2
    scorer = NaiveScorer(hf_model, max_positions=limit)
    scored = {
        r["trajectory_id"]: r
        for r in score_trajectories(
            table, scorer, tokenizer, IGConfig(answer_prefix=ANSWER_PREFIX)
        ).to_pylist()
    }
    v = [t["v"] for t in scored["q1/0"]["turns"]]
    ig = [t["ig"] for t in scored["q1/0"]["turns"]]
    assert v[0] is not None and v[1] is not None and v[2] is None
    assert ig[0] is not None and ig[1] is None and ig[2] is None
    for no_gold in ("q3/0", "q4/0"):  # golds [] and ["  "]
        assert all(t["v"] is None and t["ig"] is None for t in scored[no_gold]["turns"])
    assert scored["q1/1"]["turns"][0]["ig"] is None  # one turn: only a terminal turn


def test_score_ig_stage_on_a_local_store(hf_model, tokenizer, table, tiny_model_dir, tmp_path):
    config = RunConfig(storage=StorageConfig(root=str(tmp_path / "store")))
    storage = Storage(config.storage)
    source = storage.stage_uri("run", 0, "trajectories")
    out = storage.stage_uri("run", 0, "scored")
    write_stage(storage, source, table, "trajectories", policy_version=3)
    manifest = run_score_ig(
        config, trajectories_uri=source, policy_uri=str(tiny_model_dir), out_uri=out
    )
    scored = read_stage(storage, out, "scored")
    want = score_trajectories(table, PackedScorer(hf_model), tokenizer, resolved_ig(config))
    assert scored.column("trajectory_id").to_pylist() == table.column("trajectory_id").to_pylist()
    for got_turns, want_turns in zip(
        scored.column("turns").to_pylist(), want.column("turns").to_pylist(), strict=True
    ):
        for g, w in zip(got_turns, want_turns, strict=True):
            assert (g["v"] is None) == (w["v"] is None) and (g["ig"] is None) == (w["ig"] is None)
            if w["v"] is not None:
                assert g["v"] == pytest.approx(w["v"], abs=1e-6)
    assert manifest.schema_name == "scored" and manifest.policy_version == 3
    assert manifest.parents == [source, str(tiny_model_dir)]
    assert (
        manifest.stats["scorer"] == "packed" and manifest.stats == read_manifest(storage, out).stats
    )
    assert manifest.stats["ig_missing"] == ig_stats(want)["ig_missing"]
    # Committed once: a second run returns the same manifest without scoring again.
    again = run_score_ig(
        config, trajectories_uri=source, policy_uri=str(tiny_model_dir), out_uri=out
    )
    assert again.content_hash == manifest.content_hash


def test_score_ig_stage_on_a_lora_checkpoint(hf_model, tokenizer, table, tiny_model_dir, tmp_path):
    """A LoRA policy (adapter/ on a committed base) is scored with its adapter applied:
    the packed and naive scorers agree, and differ from the base's scores."""
    from transformers import AutoModelForCausalLM

    from a2tgpo.config_lora import LoraConfig
    from a2tgpo.data.directories import commit_directory
    from a2tgpo.training.lora import attach_adapter, export_adapter

    storage = Storage(StorageConfig(root=str(tmp_path / "store")))
    base = storage.join("run", "init")
    commit_directory(storage, tiny_model_dir, base, policy_version=0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    adapted = attach_adapter(model, LoraConfig(rank=4), None, 0)
    with torch.no_grad():
        for name, param in adapted.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05, generator=torch.Generator().manual_seed(2))
    export_adapter(adapted, tmp_path / "ckpt" / "adapter", base, write=True)
    policy = storage.join("run", "lora")
    commit_directory(storage, tmp_path / "ckpt", policy, policy_version=1)
    source = storage.stage_uri("run", 0, "trajectories")
    write_stage(storage, source, table, "trajectories", policy_version=1)
    values = {}
    for scorer in ("packed", "naive"):
        config = RunConfig(storage=storage.config, ig={"scorer": scorer})
        out = storage.stage_uri("run", 0, f"scored-{scorer}")
        run_score_ig(config, trajectories_uri=source, policy_uri=policy, out_uri=out)
        turns = read_stage(storage, out, "scored").column("turns").to_pylist()
        values[scorer] = [t["v"] for row in turns for t in row if t["v"] is not None]
    base_turns = score_trajectories(table, PackedScorer(hf_model), tokenizer, resolved_ig(config))
    plain = [
        t["v"] for row in base_turns.column("turns").to_pylist() for t in row if t["v"] is not None
    ]
    assert values["packed"] == pytest.approx(values["naive"], abs=1e-5)
    assert max(abs(a - b) for a, b in zip(values["packed"], plain, strict=True)) > 1e-3
