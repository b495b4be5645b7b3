"""The Engine contract, checked on both engines (real vLLM CPU engine, real HF model)."""

from __future__ import annotations

import numpy as np
import pytest

from a2tgpo.engines import Engine, Generation, SamplingSpec
from tests.conftest import MAX_MODEL_LEN


def _first_stop_prefix(tokenizer, token_ids: list[int], stop: str) -> int | None:
    """Reference: the fewest leading tokens whose decoded text contains `stop`."""
    for n in range(1, len(token_ids) + 1):
        if stop in tokenizer.decode(token_ids[:n], skip_special_tokens=True):
            return n
    return None


def _stop_candidates(tokenizer, token_ids: list[int]) -> dict[str, str]:
    """Stop strings taken from a sampled continuation, by where they end.

    whole: exactly one token's text (like a tag); inside: ends inside a token;
    across: spans the boundary of two tokens.
    """
    pieces = [tokenizer.decode([t]) for t in token_ids]

    def plain(s: str) -> bool:
        return s.isascii() and s.isprintable() and s.strip() == s and s != ""

    found: dict[str, str] = {}
    for k in range(2, len(pieces) - 1):
        piece, prev = pieces[k], pieces[k - 1]
        if plain(piece) and len(piece) >= 2:
            found.setdefault("whole", piece)
        if plain(piece) and len(piece) >= 3:
            found.setdefault("inside", piece[:-1])
        if plain(piece) and plain(prev):
            found.setdefault("across", prev[-1] + piece[0])
    return found


def test_stop_strings_keep_whole_tokens(engine: Engine, chat_prompts: list[list[int]]) -> None:
    tok = engine.tokenizer
    for seed in range(20):  # the first seed whose sample offers every kind of stop string
        full = engine.generate(
            [chat_prompts[0]], SamplingSpec(max_tokens=64, seed=seed, ignore_eos=True)
        )[0]
        candidates = _stop_candidates(tok, full.token_ids)
        if len(candidates) == 3:
            break
    assert len(candidates) == 3, candidates

    stops = list(candidates.values())
    specs = [SamplingSpec(max_tokens=64, seed=seed, stop=(s,), ignore_eos=True) for s in stops]
    outs = engine.generate([chat_prompts[0]] * len(stops), specs)
    for stop, out in zip(stops, outs, strict=True):
        n = _first_stop_prefix(tok, full.token_ids, stop)
        assert n is not None
        assert out.finish_reason == "stop" and out.stop_reason == stop
        assert out.token_ids == full.token_ids[:n]
        assert out.text == tok.decode(full.token_ids[:n], skip_special_tokens=True)
        assert stop in out.text and stop not in tok.decode(full.token_ids[: n - 1])
        np.testing.assert_allclose(out.logprobs, full.logprobs[:n], atol=1e-5)
    # The "inside" stop ends within the last kept token, which is kept whole.
    inside = outs[stops.index(candidates["inside"])]
    assert not inside.text.endswith(candidates["inside"])


def test_eos_ends_and_is_kept(engine: Engine, chat_prompts: list[list[int]]) -> None:
    eos = engine.tokenizer.eos_token_id
    prompts = [chat_prompts[i % 3] for i in range(128)]
    outs = engine.generate(prompts, [SamplingSpec(max_tokens=48, seed=i) for i in range(128)])
    ended = [o for o in outs if eos in o.token_ids]
    assert ended, "no sample hit EOS: make the batch larger"
    for o in ended:
        assert o.token_ids.index(eos) == len(o.token_ids) - 1
        assert o.finish_reason == "stop" and o.stop_reason is None
        assert len(o.logprobs) == len(o.token_ids)
    for o in outs:
        if eos not in o.token_ids:
            assert o.finish_reason == "length" and len(o.token_ids) == 48


def test_max_tokens_gives_length(engine: Engine, chat_prompts: list[list[int]]) -> None:
    outs = engine.generate(chat_prompts, SamplingSpec(max_tokens=5, ignore_eos=True))
    for o in outs:
        assert isinstance(o, Generation)
        assert (o.finish_reason, o.stop_reason, len(o.token_ids)) == ("length", None, 5)
        assert len(o.logprobs) == 5 and all(lp <= 0 for lp in o.logprobs)
    no_lp = engine.generate(chat_prompts[:1], SamplingSpec(max_tokens=3, logprobs=False))
    assert no_lp[0].logprobs is None


def test_context_limit_gives_length(engine: Engine) -> None:
    prompt = [5] * (MAX_MODEL_LEN - 3)
    out = engine.generate([prompt], SamplingSpec(max_tokens=10, ignore_eos=True))[0]
    assert out.finish_reason == "length" and len(out.token_ids) == 3


def test_seeds_make_sampling_reproducible(engine: Engine, chat_prompts: list[list[int]]) -> None:
    specs = [SamplingSpec(max_tokens=24, seed=s, ignore_eos=True) for s in (11, 11, 12)]
    a = engine.generate([chat_prompts[1]] * 3, specs)
    b = engine.generate([chat_prompts[1]] * 3, specs)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert a[0].token_ids == a[1].token_ids != a[2].token_ids


def test_greedy_and_tiny_top_p_agree(engine: Engine, chat_prompts: list[list[int]]) -> None:
    greedy = engine.generate(chat_prompts, SamplingSpec(max_tokens=16, temperature=0.0))
    again = engine.generate(chat_prompts, SamplingSpec(max_tokens=16, temperature=0.0))
    nucleus = engine.generate(chat_prompts, SamplingSpec(max_tokens=16, top_p=1e-6, seed=3))
    assert [g.token_ids for g in greedy] == [g.token_ids for g in again]
    assert [g.token_ids for g in greedy] == [g.token_ids for g in nucleus]


def test_argument_checks(engine: Engine, chat_prompts: list[list[int]]) -> None:
    with pytest.raises(ValueError, match="specs"):
        engine.generate(chat_prompts, [SamplingSpec(max_tokens=2)])
    with pytest.raises(ValueError, match="start"):
        engine.prompt_logprobs([[1, 2, 3]], [0])
    with pytest.raises(ValueError):
        SamplingSpec(max_tokens=0)
    assert engine.generate([], SamplingSpec(max_tokens=2)) == []
    assert engine.prompt_logprobs([], []) == []


def test_seeded_batch_larger_than_one_step(engine: Engine) -> None:
    """More prompt tokens than one vLLM step holds (4096 on CPU), all seeded.

    Regression: vLLM CPU with chunked prefill killed the engine here ("CPU Generator
    does not use offset"); the engine now disables chunked prefill on CPU.
    """
    prompts = [[7 + (i % 50)] * 120 for i in range(48)]
    outs = engine.generate(prompts, [SamplingSpec(max_tokens=48, seed=i) for i in range(48)])
    assert all(len(o.token_ids) >= 1 for o in outs)
