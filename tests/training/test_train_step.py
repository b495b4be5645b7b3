"""The train-step stage with real DeepSpeed ZeRO-3 on CPU (worker subprocesses, gloo)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch
from transformers import AutoModelForCausalLM

from a2tgpo.config import RunConfig
from a2tgpo.data.checkpoints import local_policy
from a2tgpo.data.directories import commit_directory, materialize
from a2tgpo.data.fakes import fake_trajectories
from a2tgpo.data.stage import read_stage, write_stage
from a2tgpo.data.storage import Storage
from a2tgpo.stages.train_step import run_train_step

pytestmark = pytest.mark.slow


def config_for(tmp_path, **train) -> RunConfig:
    settings = {
        "micro_batch_tokens": 512,
        "mini_batches": 1,
        "ppo_epochs": 1,
        "learning_rate": 1e-3,
    }
    return RunConfig(
        storage={"root": str(tmp_path / "store")},
        model={"dtype": "float32"},
        train=settings | train,
    )


def advantaged(config: RunConfig, vocab: int, uri: str, rows: int = 8, **columns) -> str:
    table = fake_trajectories(
        rows, tokens=96, turns=3, schema_name="advantaged", vocab=vocab, seed=1
    )
    for name, column in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, column)
    write_stage(Storage(config.storage), uri, table, "advantaged", policy_version=0)
    return uri


@pytest.fixture
def setup(tmp_path, tiny_model_dir):
    config = config_for(tmp_path)
    storage = Storage(config.storage)
    init = storage.join("run", "init")
    commit_directory(storage, tiny_model_dir, init, policy_version=0)
    vocab = AutoModelForCausalLM.from_pretrained(tiny_model_dir).config.vocab_size
    return config, storage, init, vocab


def train(config, data, policy, out, version=1, **kw):
    return run_train_step(
        config, advantaged_uri=data, policy_uri=policy, out_uri=out, policy_version=version, **kw
    )


def weights(storage: Storage, uri: str) -> dict[str, torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(local_policy(storage, uri))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_loss_falls_on_a_fixed_batch_and_the_checkpoint_loads(setup):
    config, storage, init, vocab = setup
    config = config.model_copy(update={"train": config.train.model_copy(update={"ppo_epochs": 6})})
    data = advantaged(config, vocab, storage.join("run", "adv"))
    manifest = train(config, data, init, storage.join("run", "ckpt1"))
    losses = manifest.stats["losses"]
    # PPO steps on one batch: the surrogate falls until the clip range holds it
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.03, losses
    assert manifest.stats["clip_fraction"] > 0
    assert manifest.policy_version == 1 and manifest.parents == [data, init]
    assert manifest.stats["micro_batches"] >= 1 and manifest.stats["trained_tokens"] > 0
    after, before = weights(storage, storage.join("run", "ckpt1")), weights(storage, init)
    assert any(not torch.equal(after[k], before[k]) for k in after)
    assert train(config, data, init, storage.join("run", "ckpt1")).created_at == manifest.created_at


def test_resume_restores_the_optimizer_state(setup):
    config, storage, init, vocab = setup
    data = advantaged(config, vocab, storage.join("run", "adv"))
    first = storage.join("run", "step1")
    train(config, data, init, first)
    local = materialize(storage, first)
    # the optimizer state for the next step, as data only: no pickle anywhere
    state = json.loads((local / "optim" / "state.json").read_text())
    assert state["step"] == 1 and state["keys"] == ["exp_avg", "exp_avg_sq"]
    assert {p.suffix for p in local.rglob("*") if p.is_file()} <= {
        ".json",
        ".safetensors",
        ".jinja",
    }
    resumed_a = train(config, data, first, storage.join("run", "a"), version=2)
    resumed_b = train(config, data, first, storage.join("run", "b"), version=2)
    assert resumed_a.stats["loss_first"] == resumed_b.stats["loss_first"]
    wa, wb = weights(storage, storage.join("run", "a")), weights(storage, storage.join("run", "b"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # Without the optimizer state (weights only) the same step lands elsewhere: the
    # resumed runs above really used the saved Adam moments.
    weights_only = storage.join("run", "weights-only")
    commit_directory(storage, local / "hf", weights_only, policy_version=1)
    fresh = train(config, data, weights_only, storage.join("run", "c"), version=2)
    assert fresh.stats["loss_first"] == pytest.approx(resumed_a.stats["loss_first"], abs=1e-6)
    wc = weights(storage, storage.join("run", "c"))
    assert any((wa[k] - wc[k]).abs().max() > 1e-7 for k in wa)


def test_two_ranks_on_gloo_match_one(setup):
    config, storage, init, vocab = setup
    config = config.model_copy(
        update={"train": config.train.model_copy(update={"mini_batches": 2})}
    )
    data = advantaged(config, vocab, storage.join("run", "adv"), rows=12)
    one = train(config, data, init, storage.join("run", "one"))
    two_ranks = config.model_copy(
        update={"train": config.train.model_copy(update={"cpu_processes": 2})}
    )
    two = train(two_ranks, data, init, storage.join("run", "two"))
    assert two.stats["world_size"] == 2
    np.testing.assert_allclose(two.stats["losses"], one.stats["losses"], rtol=1e-5, atol=1e-6)
    w1, w2 = (
        weights(storage, storage.join("run", "one")),
        weights(storage, storage.join("run", "two")),
    )
    assert all(torch.allclose(w1[k], w2[k], atol=1e-5) for k in w1)
    # The optimizer state is saved whole (gathered over ranks): the 2-rank step resumes
    # on one rank as the 1-rank step does.
    after_one = train(config, data, storage.join("run", "one"), storage.join("run", "1b"), 2)
    after_two = train(config, data, storage.join("run", "two"), storage.join("run", "2b"), 2)
    np.testing.assert_allclose(
        after_two.stats["losses"], after_one.stats["losses"], rtol=1e-5, atol=1e-6
    )
    w1, w2 = (
        weights(storage, storage.join("run", "1b")),
        weights(storage, storage.join("run", "2b")),
    )
    assert all(torch.allclose(w1[k], w2[k], atol=1e-5) for k in w1)


def test_bad_input_is_a_clear_error(setup):
    config, storage, init, vocab = setup
    table_uri = advantaged(config, vocab, storage.join("run", "ok"))
    table = read_stage(storage, table_uri, "advantaged")
    turns = table.column("turns").to_pylist()
    turns[2][0]["advantage"] = float("nan")
    bad = advantaged(
        config,
        vocab,
        storage.join("run", "nan"),
        turns=pa.array(turns, table.schema.field("turns").type),
    )
    with pytest.raises(RuntimeError, match="non-finite advantage in trajectory row 2"):
        train(config, bad, init, storage.join("run", "x"))
    assert not storage.exists(storage.join("run", "x", "manifest.json"))  # nothing committed
    tiny_budget = config.model_copy(
        update={"train": config.train.model_copy(update={"micro_batch_tokens": 64})}
    )
    with pytest.raises(RuntimeError, match="longer than micro_batch_tokens=64"):
        train(tiny_budget, table_uri, init, storage.join("run", "y"))
    with pytest.raises(FileNotFoundError, match="not committed"):
        train(config, storage.join("run", "missing"), init, storage.join("run", "z"))


def test_too_long_sequences_are_skipped_and_counted(setup):
    config, storage, init, vocab = setup
    data = advantaged(config, vocab, storage.join("run", "adv"))
    lengths = [
        len(t) for t in read_stage(storage, data, "advantaged").column("token_ids").to_pylist()
    ]
    budget = sorted(lengths)[len(lengths) // 2]  # about half the trajectories do not fit
    config = config.model_copy(
        update={"train": config.train.model_copy(update={"micro_batch_tokens": budget})}
    )
    manifest = train(config, data, init, storage.join("run", "ckpt"))
    assert manifest.stats["skipped_too_long"] == sum(n > budget for n in lengths) > 0
    assert json.loads(json.dumps(manifest.stats))["trained_tokens"] > 0
