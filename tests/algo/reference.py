"""A loop-by-loop transcription of shared/A2TGPO-SPEC.md, sections 2-5.

Slow and obvious on purpose: the vectorized estimator and loss are checked against
it on randomized batches. Trajectories are dicts {id: (group, outcome, [ig per turn])}.
"""

from __future__ import annotations

import math

import numpy as np

EPS = 1e-6


def _mean_std(values):
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def reference_advantages(
    trajs,
    *,
    per_turn,
    rescale,
    adaptive,
    alpha,
    gamma,
    beta,
    eps_low,
    eps_high,
    uses_ig=True,
    magnitude=False,
):
    """{(traj, k): (A, eps_low, eps_high)} with k 0-based."""
    groups = {}
    for tid, (g, _o, _igs) in trajs.items():
        groups.setdefault(g, []).append(tid)
    on = {}
    for tids in groups.values():
        outs = [trajs[t][1] for t in tids]
        mean, std = _mean_std(outs)
        for t in tids:
            on[t] = (trajs[t][1] - mean) / (std + EPS) if len(tids) >= 2 else 0.0
    # IG groups: (prompt, turn index) or pooled per prompt; finite IG of tool-call turns only
    pools = {}
    for g, _o, igs in trajs.values():
        for k, ig in enumerate(igs[:-1]):
            if math.isfinite(ig):
                pools.setdefault((g, k) if per_turn else g, []).append(ig)
    ign = {}
    for tid, (g, _o, igs) in trajs.items():
        for k, ig in enumerate(igs):
            key = (g, k) if per_turn else g
            if not uses_ig or k == len(igs) - 1 or not math.isfinite(ig) or len(pools[key]) < 2:
                ign[tid, k] = 0.0
            else:
                mean, std = _mean_std(pools[key])
                ign[tid, k] = (ig - mean) / (std + EPS)
    out = {}
    for tid, (_g, _o, igs) in trajs.items():
        T = len(igs)
        for k in range(T):
            if not uses_ig or k == T - 1:
                d = 0.0
            else:
                d = sum(gamma ** (m - k) * ign[tid, m] for m in range(k, T - 1))
                if rescale:
                    d /= math.sqrt(T - 1 - k)
            a = on[tid] + (alpha * d if uses_ig else 0.0)
            x = abs(ign[tid, k]) if magnitude else ign[tid, k]
            c = 1 + beta * math.tanh(x / 2) if adaptive else 1.0
            out[tid, k] = (a, eps_low * c, eps_high * c)
    return out


def reference_token_loss(logp, old, adv, lo, hi, mask, dual_clip):
    """Per-token loss array (0 where masked), token level ratio."""
    loss = np.zeros_like(logp)
    for i in np.ndindex(logp.shape):
        if not mask[i]:
            continue
        r = math.exp(logp[i] - old[i])
        l1 = -adv[i] * r
        l2 = -adv[i] * min(max(r, 1 - lo[i]), 1 + hi[i])
        value = max(l1, l2)
        if dual_clip is not None and adv[i] < 0:
            value = min(value, -dual_clip * adv[i])
        loss[i] = value
    return loss
