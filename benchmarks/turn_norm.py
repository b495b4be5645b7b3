"""Does per-turn-index IG normalization push trajectory length? A controlled simulation.

    .venv/bin/python benchmarks/turn_norm.py [--seeds 8] [--steps 300] [--seed 0]

No model, no engine: a simulated search task drives the project's own estimator
(`a2tgpo.algo.turn_advantages`). A question needs HOPS facts; a search made while
facts are missing finds the next one with probability `hit` (1.0: exactly HOPS
searches are needed); a search made once all are found is "extra": useless (nothing
changes) or harmful (with probability 0.5 a distractor scales the belief by 0.6).
The belief b = P(correct if answering now) is BELIEF[facts found] times the distractor
factors; the outcome is Bernoulli(b) at the answer turn, and a search turn's IG is the
change of a noisy probe of b (b + N(0, 0.03)), so IG telescopes like prob_diff IG.
The stopping policy has one logit per (turn index, all facts found?): search or answer.

(a) At a fixed policy, per estimator: mean advantage of "search" turns minus "answer"
turns, for needed decisions (facts missing: the outcome says search) and extra ones
(all found: the outcome says indifferent / answer). Every estimator sees the same
rollouts, so estimator - grpo is exactly what its IG term adds (grpo = outcome only =
what the true return supports). (b) REINFORCE on the logits with each estimator's
per-turn advantages (one action per turn; on-policy, so the clip ranges never act);
final mean searches, success, P(search | all found), 95% t CIs over seeds, against
the shortest optimal policy (search while facts are missing, then answer).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

from a2tgpo.algo import turn_advantages
from a2tgpo.analysis import format_cell, mean_ci, paired_difference

HOPS = 2
MAX_SEARCHES = 6  # turn index MAX_SEARCHES is a forced answer
BELIEF = np.array([0.05, 0.3, 0.8])  # P(correct) with 0, 1, 2 facts found
PROBE_NOISE = 0.03
# (a) is measured at two fixed policies, logit of P(search) while facts are missing (P(search)
# once all are found is 0.5 in both): the start of training, and the point the outcome alone
# leads to when extra searches are useless (search while missing, coin flip once found).
POLICIES = {"start": 0.0, "late": float(np.log(0.95 / 0.05))}


@dataclass(frozen=True)
class Setting:
    name: str
    hit: float  # P(a search while facts are missing finds the next one)
    harm: float  # P(an extra search brings a distractor)
    harm_scale: float = 0.6  # belief multiplier per distractor


SETTINGS = (
    Setting("fixed-useless", hit=1.0, harm=0.0),
    Setting("fixed-harmful", hit=1.0, harm=0.5),
    Setting("random-useless", hit=0.5, harm=0.0),
    Setting("random-harmful", hit=0.5, harm=0.5),
)

ESTIMATORS = {
    "grpo": dict(estimator="grpo"),
    "igpo": dict(estimator="igpo"),
    "igpo α=0.3": dict(estimator="igpo", ig_coef=0.3),
    "igpo per-turn": dict(estimator="igpo", turn_group_norm=True),
    "a2tgpo": dict(estimator="a2tgpo"),
    "a2tgpo pooled": dict(estimator="a2tgpo", turn_group_norm=False),
    "a2tgpo no-rescale": dict(estimator="a2tgpo", variance_rescale=False),
}


@dataclass
class Batch:
    """Per-turn rows of `seeds` independent sub-batches; one row per assistant turn."""

    seed: np.ndarray
    group: np.ndarray
    traj: np.ndarray
    turn: np.ndarray
    ig: np.ndarray  # NaN on the answer turn
    found: np.ndarray  # all facts were found before this turn's decision
    search: np.ndarray  # the turn is a search (else the answer)
    outcome: np.ndarray  # the trajectory's outcome on each of its rows
    searches: np.ndarray  # per trajectory
    success: np.ndarray  # per trajectory (0/1)


def rollout(logits: np.ndarray, setting: Setting, group_size: int, groups: int, rng) -> Batch:
    """Sample groups x group_size trajectories for each seed; logits[seed, turn, found]."""
    seeds = logits.shape[0]
    n = seeds * groups * group_size
    seed_of = np.repeat(np.arange(seeds), groups * group_size)
    facts = np.zeros(n, dtype=np.int64)
    scale = np.ones(n)
    probe = BELIEF[0] + PROBE_NOISE * rng.standard_normal(n)
    alive = np.ones(n, dtype=bool)
    success = np.zeros(n)
    parts = []
    for k in range(MAX_SEARCHES + 1):
        idx = np.flatnonzero(alive)
        found = facts[idx] >= HOPS
        if k < MAX_SEARCHES:
            p = 1.0 / (1.0 + np.exp(-logits[seed_of[idx], k, found.astype(np.int64)]))
            search = rng.random(idx.size) < p
        else:
            search = np.zeros(idx.size, dtype=bool)
        ig = np.full(idx.size, np.nan)
        s = idx[search]
        draw = rng.random(s.size)
        facts[s] += (facts[s] < HOPS) & (draw < setting.hit)
        scale[s] *= np.where(found[search] & (draw < setting.harm), setting.harm_scale, 1.0)
        new_probe = BELIEF[facts[s]] * scale[s] + PROBE_NOISE * rng.standard_normal(s.size)
        ig[search], probe[s] = new_probe - probe[s], new_probe
        a = idx[~search]
        success[a] = rng.random(a.size) < BELIEF[facts[a]] * scale[a]
        alive[a] = False
        parts.append((idx, np.full(idx.size, k), ig, found, search))
    idx, turn, ig, found, search = (np.concatenate(c) for c in zip(*parts, strict=True))
    return Batch(
        seed=seed_of[idx],
        group=idx // group_size,
        traj=idx,
        turn=turn,
        ig=ig,
        found=found,
        search=search,
        outcome=success[idx],
        searches=np.bincount(idx, weights=search, minlength=n),
        success=success,
    )


def advantages(batch: Batch, switches: dict) -> np.ndarray:
    adv, _, _ = turn_advantages(
        group=batch.group,
        trajectory=batch.traj,
        turn=batch.turn,
        ig=batch.ig,
        outcome=batch.outcome,
        **switches,
    )
    return adv.numpy()


def decision_gaps(batch: Batch, adv: np.ndarray, seeds: int) -> dict[str, np.ndarray]:
    """Per seed: mean A of search turns minus mean A of answer turns, by found-state."""
    free = batch.turn < MAX_SEARCHES  # the forced answer is no decision
    out = {}
    for key, state in (("needed", False), ("extra", True)):
        gaps = np.full(seeds, np.nan)
        for s in range(seeds):
            at = free & (batch.seed == s) & (batch.found == state)
            gaps[s] = adv[at & batch.search].mean() - adv[at & ~batch.search].mean()
        out[key] = gaps
    return out


def measure_push(
    setting: Setting, policy: str, seeds: int, groups: int, group_size: int, seed: int
) -> dict:
    """(a): decision gaps of every estimator on the same rollouts of a fixed policy.

    Per estimator, the part its IG term adds to the gaps (estimator - grpo, paired by
    seed); under "grpo", the outcome-only gaps themselves.
    """
    rng = np.random.default_rng([seed, SETTINGS.index(setting), 1 + list(POLICIES).index(policy)])
    logits = np.zeros((seeds, MAX_SEARCHES, 2))
    logits[..., 0] = POLICIES[policy]
    batch = rollout(logits, setting, group_size, groups, rng)
    gaps = {
        name: decision_gaps(batch, advantages(batch, kw), seeds) for name, kw in ESTIMATORS.items()
    }
    out = {"grpo": {key: mean_ci(gaps["grpo"][key]) for key in ("needed", "extra")}}
    for name, g in gaps.items():
        if name != "grpo":
            out[name] = {key: paired_difference(g[key], gaps["grpo"][key]) for key in g}
    return out


def train(
    setting: Setting,
    switches: dict,
    seeds: int,
    steps: int,
    lr: float,
    groups: int,
    group_size: int,
    eval_groups: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """(b): REINFORCE on the stopping logits, all seeds in one batch; per-seed final stats."""
    rng = np.random.default_rng([seed, SETTINGS.index(setting), 0])  # same for every estimator
    logits = np.zeros((seeds, MAX_SEARCHES, 2))
    for _ in range(steps):
        b = rollout(logits, setting, group_size, groups, rng)
        adv = advantages(b, switches)
        free = b.turn < MAX_SEARCHES
        k, f = b.turn[free], b.found[free].astype(np.int64)
        p = 1.0 / (1.0 + np.exp(-logits[b.seed[free], k, f]))
        grad = np.zeros_like(logits)  # d log pi(a) / d logit = a - p, per decision
        np.add.at(grad, (b.seed[free], k, f), adv[free] * (b.search[free] - p))
        logits += lr * grad / (groups * group_size)
    return evaluate(logits, setting, eval_groups, rng)


def evaluate(logits: np.ndarray, setting: Setting, eval_groups: int, rng) -> dict:
    b = rollout(logits, setting, 1, eval_groups, rng)
    per_seed = np.arange(logits.shape[0]).repeat(eval_groups)
    extra = (b.found & (b.turn < MAX_SEARCHES)).astype(np.float64)
    return {
        "searches": np.bincount(per_seed, b.searches) / eval_groups,
        "success": np.bincount(per_seed, b.success) / eval_groups,
        "p_extra": np.bincount(b.seed, extra * b.search) / np.bincount(b.seed, extra),
    }


def optimum(setting: Setting, eval_groups: int) -> dict:
    """Search while facts are missing, answer once all are found (optimal in every setting)."""
    logits = np.zeros((1, MAX_SEARCHES, 2))
    logits[..., 0], logits[..., 1] = 40.0, -40.0
    stats = evaluate(logits, setting, eval_groups * 8, np.random.default_rng(0))
    return {key: float(v[0]) for key, v in stats.items()}


def run_experiment(
    seeds: int = 8,
    steps: int = 300,
    lr: float = 1.0,
    groups: int = 16,
    group_size: int = 8,
    probe_groups: int = 2000,
    eval_groups: int = 4000,
    settings=SETTINGS,
    estimators=tuple(ESTIMATORS),
    seed: int = 0,
) -> dict:
    """Both parts for every setting; {setting: {"push", "train", "optimum"}} (see module doc)."""
    torch.set_num_threads(1)
    out = {}
    for setting in settings:
        pushes = {
            p: measure_push(setting, p, seeds, probe_groups, group_size, seed) for p in POLICIES
        }
        out[setting.name] = {
            "push": {p: {name: push[name] for name in estimators} for p, push in pushes.items()},
            "train": {
                name: train(
                    setting,
                    ESTIMATORS[name],
                    seeds,
                    steps,
                    lr,
                    groups,
                    group_size,
                    eval_groups,
                    seed,
                )
                for name in estimators
            },
            "optimum": optimum(setting, eval_groups),
        }
    return out


def print_tables(results: dict) -> None:
    for name, r in results.items():
        opt, grpo = r["optimum"], r["push"]["start"]["grpo"]
        print(f"\n## {name}: optimum {opt['searches']:.2f} searches, success {opt['success']:.3f}")
        print(
            f"outcome-only gap at start: needed {format_cell(grpo['needed'], signed=True)}, "
            f"extra {format_cell(grpo['extra'], signed=True)}"
        )
        print(
            "| estimator | (a) IG push needed, start | (a) IG push extra, start "
            "| (a) IG push extra, late | (b) searches | (b) success | (b) P(search if found) |"
        )
        print("|---|---|---|---|---|---|---|")
        for est, t in r["train"].items():
            cells = [
                _push_cell(r["push"][p][est][key])
                for p, key in (("start", "needed"), ("start", "extra"), ("late", "extra"))
            ]
            cells += [
                format_cell(mean_ci(t["searches"]), 2),
                format_cell(mean_ci(t["success"])),
                format_cell(mean_ci(t["p_extra"]), 2),
            ]
            print(f"| {est} | " + " | ".join(cells) + " |")
        for a, b in (("a2tgpo", "grpo"), ("a2tgpo", "igpo"), ("igpo per-turn", "igpo")):
            if a in r["train"] and b in r["train"]:
                print(
                    f"(b) searches {a} - {b}, paired by seed: "
                    f"{_push_cell(paired_searches(r, a, b))}"
                )


def _push_cell(push) -> str:
    if not hasattr(push, "p_value"):
        return "(reference)"
    return format_cell(push, signed=True) + ("*" if push.significant else "")


def paired_searches(r: dict, a: str, b: str):
    """(b) mean searches of a minus b, paired by seed (runs share their random stream)."""
    return paired_difference(r["train"][a]["searches"], r["train"][b]["searches"])


def summary(results: dict) -> str:
    parts = []
    for name, r in results.items():
        s = {est: mean_ci(t["searches"]).mean for est, t in r["train"].items()}
        shown = " ".join(f"{e} {s[e]:.2f}" for e in ("grpo", "igpo", "a2tgpo") if e in s)
        delta = ""
        if {"a2tgpo", "igpo"} <= s.keys():
            d = paired_searches(r, "a2tgpo", "igpo")
            delta = f" (a2tgpo-igpo {d.mean:+.2f}±{d.half_width:.2f})"
        parts.append(f"{name}: opt {r['optimum']['searches']:.2f} {shown}{delta}")
    return "summary: final searches | " + " | ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--probe-groups", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0, help="base seed of every random stream")
    args = parser.parse_args()
    start = time.perf_counter()
    results = run_experiment(
        args.seeds, args.steps, args.lr, probe_groups=args.probe_groups, seed=args.seed
    )
    print(
        f"{args.seeds} seeds, {args.steps} steps x 16 prompts x 8 rollouts, lr {args.lr}; "
        f"(a) {args.probe_groups} groups x 8 per seed; base seed {args.seed}; * = CI excludes 0"
    )
    print_tables(results)
    print(f"\nwall {time.perf_counter() - start:.1f} s")
    print(summary(results))


if __name__ == "__main__":
    main()
