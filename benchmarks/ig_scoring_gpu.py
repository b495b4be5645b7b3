"""IG scoring on one GPU: packed (two-pass, one-pass) and naive vs one plain forward.

A random Qwen2.5-0.5B-shaped model (hidden 896, 24 layers, 14 heads, 2 KV heads,
intermediate 4864, vocab 151,936, tied embeddings; ~494M parameters), bf16, SDPA;
8 trajectories of ~2k tokens with 6 turn boundaries each and one probe per boundary
(a 12-token answer prefix, as IGPO's, then a 3-5 token gold). Times, best of
--repeats after a warm-up, with CUDA synchronised:

  forward    a trainer's old-logprob pass: logits and log-probs of every token
  packed     PackedScorer, two-pass (the default): causal forward + KV cache, probes after
  packed_1p  PackedScorer(two_pass=False): one row per trajectory under a dense 4D mask
  naive      NaiveScorer: one forward per probe

then prints the ratios and max |packed - naive| of v in bf16 and in fp32 (the same
weights upcast). Needs only torch, numpy and transformers: it imports the scorer
modules a2tgpo/scoring/{probes,base,naive,packed}.py, which import nothing else (the
script checks), so it runs on a bare GPU machine from the repository root:

    python3 benchmarks/ig_scoring_gpu.py            # ~1 minute on an H100
    python3 benchmarks/ig_scoring_gpu.py --tiny     # tiny shapes: a CPU smoke test
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

from a2tgpo.scoring.naive import NaiveScorer
from a2tgpo.scoring.packed import PackedScorer
from a2tgpo.scoring.probes import build_probe_sets
from benchmarks.gpu_shapes import QWEN25_05B, TINY


def build_model(shape: dict, device: str, dtype: torch.dtype):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        **shape,
        max_position_embeddings=4096,
        rope_theta=1e6,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the GPU: 494M parameters on CPU take long
        model = Qwen2ForCausalLM(config)
    return model.to(dtype).eval()


def trajectories(vocab: int, count: int, length: int, turns: int, seed: int = 0):
    """Random-id trajectories of ~length tokens, a probe after each of `turns` boundaries."""
    rng = np.random.default_rng(seed)
    sets, full = [], []
    prefix = rng.integers(3, vocab, size=12).tolist()  # the answer prefix, same for all
    for _ in range(count):
        n = int(rng.integers(int(0.93 * length), length + 1))
        tokens = rng.integers(3, vocab, size=n)
        prompt = n // 20
        # Boundary k: the start of turn k; turns and observations share the rest.
        starts = prompt + np.arange(turns) * (n - prompt) // turns
        boundaries = (starts + rng.integers(0, 8, size=turns)).tolist()
        gold = rng.integers(3, vocab, size=int(rng.integers(3, 6))).tolist()
        sets += build_probe_sets(tokens, boundaries, [(prefix + gold, len(prefix))])
        full.append(tokens)
    return sets, full


@torch.no_grad()
def plain_forward(model, full: list[np.ndarray], device: str) -> torch.Tensor:
    """Logits and log p(token) at every position of the (right-padded) trajectories."""
    ids = torch.zeros(len(full), max(map(len, full)), dtype=torch.long)
    for r, t in enumerate(full):
        ids[r, : len(t)] = torch.from_numpy(t)
    ids = ids.to(device)
    logits = model(input_ids=ids).logits  # right padding: causal rows never see the pads
    return torch.log_softmax(logits[:, :-1].float(), -1).gather(2, ids[:, 1:, None])


def best_time(fn, repeats: int, device: str):
    """(best wall time over `repeats` calls after a warm-up call, the last call's result)."""
    result = fn()
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.nanmax(np.abs(x - y))) for x, y in zip(a, b, strict=True))


def time_all(model, sets, full, repeats: int, device: str) -> tuple[dict, dict]:
    """Best times of the plain forward and of each scorer, and each scorer's v values."""
    # A token budget that holds all 8 rows with their probes in one batch, as the
    # plain forward does (the default 16384 would split 8 x (2k + probes) in two).
    budget = 1 << 15
    scorers = {
        "packed": PackedScorer(model, budget),
        "packed_1p": PackedScorer(model, budget, two_pass=False),
        "naive": NaiveScorer(model, budget),
    }
    times, values = {}, {}
    times["forward"], _ = best_time(lambda: plain_forward(model, full, device), repeats, device)
    for key, scorer in scorers.items():
        times[key], values[key] = best_time(lambda s=scorer: s.score(sets), repeats, device)
    return times, values


def fp32_differences(model, sets) -> dict[str, float]:
    """max |packed - naive| with the same weights in fp32: rounding only, should be ~1e-6."""
    model = model.float()
    naive = NaiveScorer(model).score(sets)
    return {
        "packed": max_diff(naive, PackedScorer(model).score(sets)),
        "packed_1p": max_diff(naive, PackedScorer(model, two_pass=False).score(sets)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (CPU smoke test)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--trajectories", type=int, default=8)
    parser.add_argument("--turns", type=int, default=6)
    args = parser.parse_args()
    import transformers

    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape, length = (TINY, 256) if args.tiny else (QWEN25_05B, 2048)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {name}")
    heavy = [m for m in ("a2tgpo.config", "pydantic", "vllm", "deepspeed") if m in sys.modules]
    print(f"modules beyond torch/numpy/transformers: {heavy or 'none'}")
    model = build_model(shape, device, torch.bfloat16)
    sets, full = trajectories(shape["vocab_size"], args.trajectories, length, args.turns)
    tokens = sum(map(len, full))
    params = sum(p.numel() for p in model.parameters()) / 1e6
    probe = sorted({len(s.probe) for s in sets})
    print(f"{params:.1f}M parameters, bf16; {len(full)} trajectories, {tokens} tokens")
    print(f"{len(sets) * args.turns} probes of {probe[0]}-{probe[-1]} tokens")

    times, values = time_all(model, sets, full, args.repeats, device)
    for key, t in times.items():
        print(f"{key:>10}: {t * 1000:9.1f} ms  {tokens / t:12,.0f} trajectory tokens/s")
    print(
        f"packed_vs_forward={times['packed'] / times['forward']:.2f} "
        f"packed_1p_vs_forward={times['packed_1p'] / times['forward']:.2f} "
        f"naive_vs_packed={times['naive'] / times['packed']:.2f}"
    )
    bf16 = {k: max_diff(values["naive"], values[k]) for k in ("packed", "packed_1p")}
    fp32 = fp32_differences(model, sets)
    print(
        f"max |packed - naive| of v: bf16 {bf16['packed']:.1e} "
        f"(one-pass {bf16['packed_1p']:.1e}), fp32 {fp32['packed']:.1e} "
        f"(one-pass {fp32['packed_1p']:.1e})"
    )
    print("exact in fp32 (< 1e-3):", all(d < 1e-3 for d in fp32.values()))


if __name__ == "__main__":
    main()
