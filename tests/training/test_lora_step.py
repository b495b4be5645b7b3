"""LoRA through the train step, with real DeepSpeed ZeRO-3 on CPU, vLLM's CPU LoRA path
and peft: the adapter the trainer commits is the policy vLLM and HF then run."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file

from a2tgpo.config import RunConfig
from a2tgpo.data.checkpoints import policy_files
from a2tgpo.data.directories import commit_directory, materialize
from a2tgpo.data.fakes import fake_trajectories
from a2tgpo.data.stage import write_stage
from a2tgpo.data.storage import Storage
from a2tgpo.engines import make_engine
from a2tgpo.stages.train_step import run_train_step
from a2tgpo.training.persistent import PersistentTrainer

pytestmark = pytest.mark.slow
RANK = 8


def lora_config(tmp_path, **train) -> RunConfig:
    settings = {"micro_batch_tokens": 512, "mini_batches": 1, "learning_rate": 2e-2}
    return RunConfig(
        storage={"root": str(tmp_path / "store")},
        model={"dtype": "float32", "lora": {"rank": RANK}},
        train=settings | train,
    )


def advantaged(storage: Storage, uri: str, vocab: int, rollout_logprobs=None) -> str:
    table = fake_trajectories(8, tokens=96, turns=3, schema_name="advantaged", vocab=vocab, seed=1)
    if rollout_logprobs is not None:
        index = table.schema.get_field_index("rollout_logprobs")
        column = pa.array(rollout_logprobs, type=table.schema.field(index).type)
        table = table.set_column(index, "rollout_logprobs", column)
    write_stage(storage, uri, table, "advantaged", policy_version=0)
    return uri


def train(config, data, policy, out, version, reference=None, trainer=None):
    """A train step in new worker processes, or on a persistent `trainer`'s."""
    return run_train_step(
        config,
        advantaged_uri=data,
        policy_uri=policy,
        out_uri=out,
        policy_version=version,
        reference_uri=reference,
        session=SimpleNamespace(trainer=trainer) if trainer else None,
    )


def sequences(storage: Storage, uri: str) -> list[list[int]]:
    from a2tgpo.data.stage import read_stage

    return read_stage(storage, uri, "advantaged", ["token_ids"]).column("token_ids").to_pylist()


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> RunConfig:
    return lora_config(tmp_path_factory.mktemp("lora"), ppo_epochs=4, export_merged=True)


@pytest.fixture(scope="module")
def trainer(config):
    """A persistent trainer: its ranks keep the engine (adapters, AdamW) between steps."""
    with PersistentTrainer(config) as resident:
        yield resident


@pytest.fixture(scope="module")
def run(config, trainer, tiny_model_dir):
    """Step 1 (new adapters, the merged folder exported too) from the tiny model, on the
    persistent trainer."""
    storage = Storage(config.storage)
    init = storage.join("run", "init")
    commit_directory(storage, tiny_model_dir, init, policy_version=0)
    vocab = json.loads((tiny_model_dir / "config.json").read_text())["vocab_size"]
    data = advantaged(storage, storage.join("run", "adv"), vocab)
    first = train(config, data, init, storage.join("run", "step1"), 1, trainer=trainer)
    return config, storage, init, vocab, data, first


def test_a_lora_step_trains_and_commits_only_the_adapters(run):
    _config, storage, init, _, data, first = run
    losses = first.stats["losses"]
    assert losses[-1] < losses[0] - 0.01, losses  # the adapters alone fit the batch
    assert first.stats["lora"]["base_policy"] == init and first.parents == [data, init]
    local = materialize(storage, first.uri)
    adapter = json.loads((local / "adapter" / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["r"] == RANK
    assert adapter["base_model_name_or_path"] == init and adapter["lora_alpha"] == 2 * RANK
    tensors = load_file(local / "adapter" / "adapter_model.safetensors")
    assert tensors and all(".lora_A.weight" in k or ".lora_B.weight" in k for k in tensors)
    assert any(t.abs().max() > 0 for k, t in tensors.items() if "lora_B" in k)  # B trained
    trainable = sum(t.numel() for t in tensors.values())
    params = first.stats["parameters"]
    assert params["trainable"] == trainable < params["total"] // 5
    state = json.loads((local / "optim" / "state.json").read_text())
    assert {k.rsplit(".", 1)[0] for k in state["files"]} == {
        n.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default.")
        for n in tensors
    }  # AdamW state for the adapters only
    files = policy_files(storage, first.uri)
    assert files.adapter_dir == local / "adapter" and files.base_uri == init
    assert files.model_dir == materialize(storage, init)


def test_merged_export_equals_base_plus_adapter(run):
    _, storage, _, _vocab, data, first = run
    files = policy_files(storage, first.uri)
    seqs = sequences(storage, data)
    starts = [1] * len(seqs)
    with make_engine("hf", files.model_dir, dtype="float32") as base:
        plain = base.prompt_logprobs(seqs, starts)
        base.set_adapter(str(files.adapter_dir))
        adapted = base.prompt_logprobs(seqs, starts)
    with make_engine("hf", materialize(storage, first.uri) / "hf", dtype="float32") as merged:
        exported = merged.prompt_logprobs(seqs, starts)
    for a, m, p in zip(adapted, exported, plain, strict=True):
        np.testing.assert_allclose(m, a, atol=2e-5)
        assert np.abs(a - p).max() > 1e-3  # the adapter changes the policy


def test_trainer_vllm_and_hf_agree_on_the_adapter_and_resume_is_exact(run, trainer):
    """vLLM serves base + adapter; its log-probs, stored as the rollout's, equal the
    trainer's old log-probs of the next step (ZeRO-3, adapter loaded from the checkpoint);
    a new adapter is then loaded into the same engine in place."""
    config, storage, init, vocab, data, first = run
    files = policy_files(storage, first.uri)
    seqs = sequences(storage, data)
    starts = [1] * len(seqs)
    with make_engine("hf", files.model_dir, dtype="float32", adapter_dir=files.adapter_dir) as hf:
        reference = hf.prompt_logprobs(seqs, starts)
    engine = make_engine(
        "vllm",
        files.model_dir,
        dtype="float32",
        max_model_len=512,
        kv_cache_gib=0.25,
        max_lora_rank=RANK,
        adapter_dir=str(files.adapter_dir),
    )
    try:
        served = engine.prompt_logprobs(seqs, starts)
        for v, h in zip(served, reference, strict=True):
            np.testing.assert_allclose(v, h, atol=1e-4)
        rollout = [[0.0, *v.tolist()] for v in served]
        data2 = advantaged(storage, storage.join("run", "adv2"), vocab, rollout)
        # one epoch, and the KL to the base: the same engine with its adapters off
        config1 = config.model_copy(
            update={"train": config.train.model_copy(update={"ppo_epochs": 1, "kl_coef": 0.1})}
        )
        # step 2 on the trainer still holding step 1 in memory ...
        second = train(config1, data2, first.uri, storage.join("run", "step2"), 2, init, trainer)
        gaps = {k: v for k, v in second.stats["metrics"].items() if "mismatch/abs_diff" in k}
        assert gaps and max(gaps.values()) < 1e-4, gaps
        assert second.parents == [data2, first.uri, init]
        # KL(policy || base), the base's log-probs taken with the adapters off: the adapter
        # of step 1 moved the policy, so it is positive (0 would mean the adapters stayed on)
        assert second.stats["metrics"]["kl/reference"] > 1e-4
        state = json.loads((materialize(storage, second.uri) / "optim" / "state.json").read_text())
        assert state["step"] == 4 + 1  # AdamW carried over: step 1 took 4 optimizer steps
        # ... equals step 2 resumed from step 1's adapter checkpoint, bit for bit
        again = train(config1, data2, first.uri, storage.join("run", "step2-again"), 2, init)
        assert again.stats["losses"] == second.stats["losses"]
        for part in ("adapter/adapter_model.safetensors", "optim/optimizer.safetensors"):
            a, b = (load_file(materialize(storage, m.uri) / part) for m in (second, again))
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
        # the next adapter, in the running engine
        files2 = policy_files(storage, second.uri)
        assert engine.hold(str(files2.model_dir), str(files2.adapter_dir))
        with make_engine(
            "hf", files2.model_dir, dtype="float32", adapter_dir=files2.adapter_dir
        ) as hf:
            expected = hf.prompt_logprobs(seqs, starts)
        for v, h in zip(engine.prompt_logprobs(seqs, starts), expected, strict=True):
            np.testing.assert_allclose(v, h, atol=1e-4)
    finally:
        engine.close()


def test_two_ranks_partition_base_and_adapters_and_match_one(run):
    """ZeRO-3 over two gloo ranks (frozen base and adapters both partitioned) trains the
    adapter one rank trains."""
    config, storage, init, _, data, first = run
    two = config.model_copy(update={"train": config.train.model_copy(update={"cpu_processes": 2})})
    manifest = train(two, data, init, storage.join("run", "step1-two-ranks"), 1)
    assert manifest.stats["world_size"] == 2
    assert manifest.stats["losses"] == pytest.approx(first.stats["losses"], abs=1e-6)
    ours, theirs = (load_file(materialize(storage, m.uri) / "adapter" / "adapter_model.safetensors")
                    for m in (manifest, first))  # fmt: skip
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-6, rtol=0)
