"""The vLLM scorer gives the naive reference's v values (fp32, within 1e-4), and so do
both forms of the packed scorer, on the session's tiny model and vLLM engine.

Every scorer gets the same context limit, vLLM's: a probe may fill max_model_len - 1
positions (vLLM rejects a prompt with no room for one output token); a probe past
it is NaN in every scorer.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from a2tgpo.config import IGConfig, RunConfig, StorageConfig
from a2tgpo.data.stage import read_stage, write_stage
from a2tgpo.data.storage import Storage
from a2tgpo.envs.prompting import COMPACT, resolved_ig
from a2tgpo.rollout.session import EngineSession
from a2tgpo.scoring.naive import NaiveScorer
from a2tgpo.scoring.packed import PackedScorer
from a2tgpo.scoring.trajectories import score_trajectories
from a2tgpo.scoring.vllm_scorer import VLLMScorer
from a2tgpo.stages.score_ig import run_score_ig
from tests.scoring.trajectories import edge_probe_sets, random_probe_sets, trajectories_table

pytestmark = pytest.mark.slow  # the session's vLLM engine


def all_scorers(hf_model, engine) -> dict:
    vllm = VLLMScorer(engine)
    limit = vllm.max_positions
    return {
        "naive": NaiveScorer(hf_model, tokens_per_batch=4096, max_positions=limit),
        "packed": PackedScorer(hf_model, tokens_per_batch=4096, max_positions=limit),
        "packed_one_pass": PackedScorer(hf_model, max_positions=limit, two_pass=False),
        "vllm": vllm,
    }


def assert_same(reference: list[np.ndarray], other: list[np.ndarray]) -> None:
    for a, b in zip(reference, other, strict=True):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_vllm_limit_is_one_below_max_model_len(vllm_engine):
    assert VLLMScorer(vllm_engine).max_positions == vllm_engine.max_model_len - 1


@pytest.mark.parametrize("seed", [0, 1])
def test_scorers_equal_naive_on_random_trajectories(hf_model, vllm_engine, tokenizer, seed):
    scorers = all_scorers(hf_model, vllm_engine)
    sets = random_probe_sets(tokenizer, seed)
    values = {name: s.score(sets) for name, s in scorers.items()}
    assert all(np.isfinite(v).all() for v in values["naive"])
    for name in ("packed", "packed_one_pass", "vllm"):
        assert_same(values["naive"], values[name])


def test_scorers_equal_naive_on_edge_cases(hf_model, vllm_engine, tokenizer):
    scorers = all_scorers(hf_model, vllm_engine)
    limit = scorers["vllm"].max_positions
    sets = edge_probe_sets(tokenizer, limit)
    values = {name: s.score(sets) for name, s in scorers.items()}
    for name in ("packed", "packed_one_pass", "vllm"):
        assert_same(values["naive"], values[name])
    one_turn, truncated, gold_a, gold_b, near_limit, bare = values["naive"]
    assert one_turn.shape == (1,) and np.isfinite(one_turn).all()
    assert np.isfinite(truncated).all() and np.isfinite(bare).all()
    assert not np.allclose(gold_a, gold_b)  # two golds, two different probes
    # boundaries: 40, at_limit - 1, at_limit (probe ends on the limit), at_limit + 1
    assert np.isfinite(near_limit[:3]).all() and np.isnan(near_limit[3])
    assert sets[4].boundaries[2] + len(sets[4].probe) == limit


@pytest.mark.parametrize("multi_gold", ["first", "max"])
def test_multi_gold_through_score_trajectories(hf_model, vllm_engine, tokenizer, multi_gold):
    table = trajectories_table(tokenizer)
    ig = IGConfig(multi_gold=multi_gold, answer_prefix=COMPACT.answer_prefix)
    scorers = all_scorers(hf_model, vllm_engine)
    scored = {
        name: score_trajectories(table, scorers[name], tokenizer, ig)
        for name in ("naive", "packed", "vllm")
    }
    want = turn_column(scored["naive"], "v")
    for name in ("packed", "vllm"):
        np.testing.assert_allclose(turn_column(scored[name], "v"), want, atol=1e-4)
        np.testing.assert_allclose(
            turn_column(scored[name], "ig"), turn_column(scored["naive"], "ig"), atol=1e-4
        )
    # v per gold, each scored alone: "first" takes gold 0, "max" the max over the golds.
    per_gold = [
        turn_column(score_trajectories(only_gold(table, g), scorers["naive"], tokenizer, ig), "v")
        for g in (0, 1)
    ]
    expected = per_gold[0] if multi_gold == "first" else np.fmax(*per_gold)
    np.testing.assert_allclose(want, expected, atol=1e-12)
    rows_with_two_golds = np.isfinite(per_gold[1])
    assert rows_with_two_golds.sum() == 4  # q1/0 (3 turns) and q1/1 (1 turn)
    if multi_gold == "max":
        assert (want[rows_with_two_golds] >= per_gold[0][rows_with_two_golds]).all()


def turn_column(table: pa.Table, field: str) -> np.ndarray:
    """One turn field over every turn of every row, nulls as NaN."""
    values = [t[field] for turns in table.column("turns").to_pylist() for t in turns]
    return np.array([np.nan if x is None else x for x in values], dtype=np.float64)


def only_gold(table: pa.Table, index: int) -> pa.Table:
    """The table with each row's golds cut to its gold `index` (none if it has fewer)."""
    golds = [g[index : index + 1] for g in table.column("golds").to_pylist()]
    column = pa.array(golds, type=table.schema.field("golds").type)
    return table.set_column(table.schema.get_field_index("golds"), "golds", column)


def test_score_ig_stage_with_the_vllm_scorer(
    hf_model, vllm_engine, tokenizer, tiny_model_dir, tmp_path
):
    config = RunConfig(storage=StorageConfig(root=str(tmp_path)), ig=IGConfig(scorer="vllm"))
    storage = Storage(config.storage)
    source, out = storage.stage_uri("run", 0, "trajectories"), storage.stage_uri("run", 0, "scored")
    table = trajectories_table(tokenizer)
    write_stage(storage, source, table, "trajectories")
    manifest = run_score_ig(
        config,
        trajectories_uri=source,
        policy_uri=str(tiny_model_dir),
        out_uri=out,
        session=EngineSession.around(config, vllm_engine),
    )
    assert manifest.stats["scorer"] == "vllm"
    want = score_trajectories(table, PackedScorer(hf_model), tokenizer, resolved_ig(config))
    got = read_stage(storage, out, "scored")
    np.testing.assert_allclose(turn_column(got, "ig"), turn_column(want, "ig"), atol=1e-4)
