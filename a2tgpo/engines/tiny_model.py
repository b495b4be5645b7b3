"""Build the project's own tiny policy model (no hub download is possible here).

`build_tiny_model` trains a byte-level BPE tokenizer on the given texts, adds the
ChatML special tokens and the agent's tags, and writes a random-init Qwen2 causal
LM as a standard Hugging Face model folder (config.json, generation_config.json,
model.safetensors, tokenizer files) that both transformers and vLLM load.

Token conventions:
  - `<|endoftext|>` is the pad token, `<|im_end|>` the EOS / end of turn, and
    `<|im_start|>` opens a ChatML message. These three are *special*: decoding with
    `skip_special_tokens=True` drops them.
  - The agent's tags (`<think>`, `<search>`, `<answer>`, `<information>` and their
    closing forms) are *added, non-special* single tokens, so they always encode to
    one id and survive decoding, which the rollout parser relies on.

The build is deterministic for a given seed and corpus, and atomic: the folder is
assembled in a temp dir next to `out_dir` and renamed into place, so a crash never
leaves a half-written model folder behind (at worst a hidden `.{name}.tmp-*` dir).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END)
AGENT_TAGS = (
    "<think>",
    "</think>",
    "<search>",
    "</search>",
    "<answer>",
    "</answer>",
    "<information>",
    "</information>",
)
# transformers' Qwen2Tokenizer.PRETOKENIZE_REGEX (copied: it is a module constant there).
QWEN2_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# vLLM's CPU attention kernels only accept some head sizes; 64 is the one we use.
REQUIRED_HEAD_DIM = 64

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def build_tiny_model(
    out_dir: str | os.PathLike[str],
    texts: Iterable[str],
    *,
    hidden: int = 128,
    layers: int = 2,
    heads: int = 2,
    vocab_size: int = 2048,
    max_positions: int = 2048,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Train a tokenizer on `texts` and write a random-init Qwen2 model to `out_dir`.

    `vocab_size` is the BPE target including special tokens and tags; a small corpus
    may yield fewer merges, and the model's vocabulary is then the tokenizer's actual
    size, so every model id decodes to a real token. head_dim = hidden / heads must be
    64 (vLLM CPU). Raises FileExistsError if `out_dir` exists and not `overwrite`.
    Returns the resolved `out_dir`.
    """
    _check_shape(hidden, heads)
    out = Path(out_dir).resolve()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass overwrite=True to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tokenizer = _build_tokenizer(texts, vocab_size)
        tokenizer.save_pretrained(tmp)
        model = _build_model(tokenizer, hidden, layers, heads, max_positions, seed)
        model.save_pretrained(tmp, safe_serialization=True)
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; a model folder is shared read-only
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _check_shape(hidden: int, heads: int) -> None:
    if heads < 1 or hidden % heads != 0:
        raise ValueError(f"hidden={hidden} is not divisible by heads={heads}")
    head_dim = hidden // heads
    if head_dim != REQUIRED_HEAD_DIM:
        raise ValueError(
            f"head_dim = hidden/heads = {hidden}/{heads} = {head_dim}, but vLLM's CPU attention "
            f"needs head_dim {REQUIRED_HEAD_DIM}: use heads = hidden // {REQUIRED_HEAD_DIM} "
            f"(e.g. hidden=128, heads=2 or hidden=512, heads=8)"
        )


def _build_tokenizer(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE tokenizer (GPT-2 / Qwen style) wrapped for transformers."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(SPECIAL_TOKENS) + len(AGENT_TAGS):
        raise ValueError(f"vocab_size={vocab_size} cannot hold the 256 byte tokens plus specials")
    tok = Tokenizer(models.BPE())
    # Exactly Qwen2's pipeline: transformers loads a qwen2 folder through its
    # Qwen2Tokenizer, which rebuilds normalizer and pre-tokenizer this way; training
    # with the same split keeps the learned merges and the loaded tokenizer in step.
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        # The tags are added after training; reserve their ids inside the budget.
        vocab_size=vocab_size - len(AGENT_TAGS),
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in AGENT_TAGS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        bos_token=None,
        unk_token=None,
        additional_special_tokens=[IM_START],
        clean_up_tokenization_spaces=False,  # decode must give back exactly the bytes
        model_max_length=None,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _build_model(tokenizer, hidden: int, layers: int, heads: int, max_positions: int, seed: int):
    """A random-init fp32 Qwen2ForCausalLM with tied embeddings, seeded locally."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    eos_id = tokenizer.convert_tokens_to_ids(IM_END)
    pad_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        dtype="float32",
    )
    # fork_rng: the caller's global torch RNG state is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config).to(torch.float32)
    # Only token ids here: vLLM takes sampling defaults from this file, and the
    # engines must sample exactly as the caller asks.
    model.generation_config = GenerationConfig(
        bos_token_id=None, eos_token_id=eos_id, pad_token_id=pad_id
    )
    return model


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename `src` to `dst`; an existing `dst` is moved aside first, then deleted."""
    if not dst.exists():
        os.rename(src, dst)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
    os.rename(dst, old / dst.name)
    os.rename(src, dst)
    shutil.rmtree(old, ignore_errors=True)
