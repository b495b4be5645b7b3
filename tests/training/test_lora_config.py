"""LoRA settings and adapters without DeepSpeed: bad settings are clear errors, the
merged export equals peft's own merge, and an adapter written here is peft's format."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from pydantic import ValidationError
from transformers import AutoModelForCausalLM

from a2tgpo.config import RunConfig
from a2tgpo.config_lora import LoraConfig, vllm_max_lora_rank
from a2tgpo.data.checkpoints import policy_files
from a2tgpo.data.directories import commit_directory
from a2tgpo.data.storage import Storage
from a2tgpo.engines.adapters import AdapterError, load_causal_lm
from a2tgpo.engines.vllm_lora import AdapterSlot
from a2tgpo.training.launcher import input_policy
from a2tgpo.training.lora import attach_adapter, export_adapter, iter_merged_parameters

LORA = LoraConfig(rank=4, target_modules=["q_proj", "v_proj", "down_proj"])


@pytest.fixture
def adapted(tiny_model_dir):
    """A peft model on the tiny policy with a non-zero (trained-looking) adapter."""
    model = attach_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LORA, None, 0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05, generator=torch.Generator().manual_seed(1))
    return model.eval()


@pytest.mark.parametrize(
    "lora, message",
    [
        ({"rank": 1024}, "less than or equal to 512"),
        ({"rank": 8, "target_modules": [".*proj"]}, "regular expressions are not accepted"),
        ({"rank": 8, "target_modules": []}, "at least 1 item"),
        ({"rank": 8, "dropout": 1.0}, "less than 1"),
        ({"rank": 8, "alpha": 0}, "greater than 0"),
    ],
)
def test_bad_lora_settings_are_refused_with_the_reason(lora, message):
    with pytest.raises(ValidationError, match=message):
        RunConfig.model_validate({"model": {"lora": lora}})


def test_defaults_are_off_and_cover_every_qwen_linear_layer(tiny_model_dir):
    lora = RunConfig().model.lora
    assert not lora.enabled and LoraConfig(rank=8).scaling_alpha == 16
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)  # a Qwen2
    attach_adapter(model, LoraConfig(rank=8), None, 0)  # every default target exists
    assert [vllm_max_lora_rank(r) for r in (0, 1, 2, 8, 9, 64, 300)] == [0, 1, 8, 8, 16, 64, 320]


def test_a_target_the_model_lacks_is_named_with_the_model_s_layers(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    bad = LoraConfig(rank=8, target_modules=["q_proj", "c_attn"])
    with pytest.raises(AdapterError, match=r"\['c_attn'\] are not linear layers.*'q_proj'"):
        attach_adapter(model, bad, None, 0)


def test_the_cli_refuses_bad_targets_before_any_rollout(tmp_path):
    """`a2tgpo prepare` checks the targets against the initial model: one line, exit 2."""
    args = ["prepare", "--set", f"storage.root={tmp_path}", "--set", "run_id=bad-lora"]
    args += ["--set", "model.lora.rank=8", "--set", 'model.lora.target_modules=["c_attn"]']
    code = "from a2tgpo.cli import main; main()"
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "['c_attn'] are not linear layers of this model" in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_export_merge_and_reload_round_trip(tmp_path, tiny_model_dir, adapted):
    """The adapter folder is peft's (peft loads it back to the same function), and the
    streamed merge equals peft's merge_and_unload, name for name."""
    export_adapter(adapted, tmp_path / "adapter", "base-uri", write=True)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "base-uri" and config["r"] == 4
    ids = torch.arange(5, 40).unsqueeze(0)
    with torch.no_grad():
        expected = adapted(input_ids=ids).logits
        loaded = load_causal_lm(tiny_model_dir, tmp_path / "adapter")
        torch.testing.assert_close(loaded(input_ids=ids).logits, expected, atol=1e-5, rtol=0)
    merged = dict(iter_merged_parameters(adapted, torch.float32))
    reference = dict(loaded.named_parameters())
    assert merged.keys() == reference.keys()
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, reference[name], atol=1e-6, rtol=0)


def test_a_checkpoint_s_adapter_must_fit_the_config(tmp_path, tiny_model_dir, adapted):
    export_adapter(adapted, tmp_path / "adapter", str(tiny_model_dir), write=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    other = LORA.model_copy(update={"rank": 8})
    with pytest.raises(AdapterError, match=r"r: adapter 4 vs config 8.*resume with"):
        attach_adapter(model, other, str(tmp_path / "adapter"), 0)


def test_a_lora_checkpoint_needs_lora_and_is_never_stacked(tmp_path, tiny_model_dir, adapted):
    storage = Storage(RunConfig(storage={"root": str(tmp_path / "store")}).storage)
    base = storage.join("run", "init")
    commit_directory(storage, tiny_model_dir, base, policy_version=0)
    ckpt = tmp_path / "ckpt"
    export_adapter(adapted, ckpt / "adapter", base, write=True)
    uri = storage.join("run", "lora")
    commit_directory(storage, ckpt, uri, policy_version=1)
    plain = RunConfig(storage={"root": str(tmp_path / "store")})
    with pytest.raises(AdapterError, match=r"is a LoRA checkpoint .* needs model\.lora"):
        input_policy(plain, storage, uri, "rl")
    lora = plain.model_copy(update={"model": plain.model.model_copy(update={"lora": LORA})})
    assert input_policy(lora, storage, uri, "rl").base_uri == base
    assert input_policy(lora, storage, base, "rl").base_uri == base  # new adapters on it
    stacked = tmp_path / "stacked"
    export_adapter(adapted, stacked / "adapter", uri, write=True)
    commit_directory(storage, stacked, storage.join("run", "stacked"), policy_version=2)
    with pytest.raises(AdapterError, match="adapters do not stack"):
        policy_files(storage, storage.join("run", "stacked"))


def test_an_engine_without_lora_slots_refuses_an_adapter(tmp_path, adapted):
    export_adapter(adapted, tmp_path / "adapter", "base", write=True)
    with pytest.raises(AdapterError, match="started without LoRA"):
        AdapterSlot(0).check(str(tmp_path / "adapter"))
    with pytest.raises(AdapterError, match="rank 4, above the engine's max_lora_rank 1"):
        AdapterSlot(1).check(str(tmp_path / "adapter"))


def test_an_adapter_policy_gets_lora_slots_without_model_lora(tmp_path, adapted):
    """Evaluating another run's LoRA checkpoint needs no model.lora: the engine started
    for it gets slots of the adapter's rank."""
    from a2tgpo.rollout.session import options_for

    export_adapter(adapted, tmp_path / "adapter", "base", write=True)
    assert options_for(RunConfig(), None)["max_lora_rank"] == 0
    assert options_for(RunConfig(), str(tmp_path / "adapter"))["max_lora_rank"] == 4
