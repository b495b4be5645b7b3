"""The tiny model folder: loads in transformers, ChatML, tags, determinism, atomicity."""

from __future__ import annotations

from pathlib import Path

import pytest

from a2tgpo.engines import AGENT_TAGS, build_tiny_model
from a2tgpo.engines.tiny_model import IM_END, IM_START, PAD_TOKEN

FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json")


def test_transformers_loads_it(tiny_model_dir: Path, tokenizer) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    for name in FILES:
        assert (tiny_model_dir / name).is_file()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cfg = model.config
    assert cfg.model_type == "qwen2"
    assert cfg.hidden_size // cfg.num_attention_heads == 64
    assert cfg.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert model.dtype == torch.float32
    assert cfg.vocab_size == len(tokenizer) <= 2048
    assert tokenizer.eos_token == IM_END
    assert tokenizer.pad_token == PAD_TOKEN
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id == cfg.eos_token_id
    logits = model(torch.tensor([tokenizer.encode("hello <search>")])).logits
    assert logits.shape[-1] == len(tokenizer)


def test_loaded_tokenizer_matches_the_trained_one(tiny_model_dir: Path, tokenizer) -> None:
    """transformers rebuilds a qwen2 tokenizer's pre-tokenizer; it must agree with ours."""
    from tokenizers import Tokenizer
    from transformers.models.qwen2 import tokenization_qwen2

    from a2tgpo.engines.tiny_model import QWEN2_PRETOKENIZE_REGEX

    assert QWEN2_PRETOKENIZE_REGEX == tokenization_qwen2.PRETOKENIZE_REGEX
    raw = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    for text in ["Year 12345,  two  spaces\n\nnew", "Zürich 東京 🙂", "don't <answer>x</answer>"]:
        assert tokenizer.encode(text) == raw.encode(text).ids
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_chat_template(tokenizer) -> None:
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"
    )
    messages.append({"role": "assistant", "content": "<answer>A</answer>"})
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n<answer>A</answer><|im_end|>\n")


def test_tags_and_specials_are_single_tokens(tokenizer) -> None:
    for token in (*AGENT_TAGS, PAD_TOKEN, IM_START, IM_END):
        ids = tokenizer.encode(token)
        assert len(ids) == 1, token
        assert tokenizer.convert_ids_to_tokens(ids[0]) == token
    text = "<think>a</think><search>b c</search><information>d</information><answer>e</answer>"
    ids = tokenizer.encode(text + IM_END)
    # Tags are not special: they survive skip_special_tokens; the EOS does not.
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.decode(ids) == text + IM_END
    assert tokenizer.decode(tokenizer.encode("x<search>y")) == "x<search>y"


def test_build_is_deterministic(tmp_path: Path, corpus: list[str]) -> None:
    a = build_tiny_model(tmp_path / "a", corpus, seed=7)
    b = build_tiny_model(tmp_path / "b", corpus, seed=7)
    c = build_tiny_model(tmp_path / "c", corpus, seed=8)
    for name in (*FILES, "tokenizer_config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "tokenizer.json").read_bytes() == (c / "tokenizer.json").read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


def test_head_dim_must_be_64(tmp_path: Path, corpus: list[str]) -> None:
    with pytest.raises(ValueError, match="head_dim"):
        build_tiny_model(tmp_path / "m", corpus, hidden=128, heads=8)
    with pytest.raises(ValueError, match="divisible"):
        build_tiny_model(tmp_path / "m", corpus, hidden=130, heads=3)
    assert not any(tmp_path.iterdir())


def test_write_is_atomic(tmp_path: Path, corpus: list[str]) -> None:
    def crashing_texts():
        yield from corpus[:5]
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        build_tiny_model(tmp_path / "m", crashing_texts())
    assert list(tmp_path.iterdir()) == []  # no model folder, no temp leftovers

    out = build_tiny_model(tmp_path / "m", corpus, seed=1)
    with pytest.raises(FileExistsError):
        build_tiny_model(out, corpus)
    before = (out / "model.safetensors").read_bytes()
    build_tiny_model(out, corpus, seed=2, overwrite=True)
    assert (out / "model.safetensors").read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
