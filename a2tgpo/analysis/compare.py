"""The estimator comparison table, from finished runs in MLflow.

`collect(client, ...)` reads each run's held-out evaluations and training reward;
`summarize(...)` turns them into one row per preset: held-out greedy EM and F1 at the
last evaluation and at the best one (mean ± 95% Student-t interval over seeds), the
starting policy's EM, EM per hop count, and a paired comparison with a baseline preset
on the seeds both have (mean difference, its t interval and the paired t-test p-value).
Every cell states how many seeds it holds; failed members are listed with their error.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from a2tgpo.analysis.stats import curve_band, format_cell, mean_ci, paired_difference

EVAL_EM, EVAL_F1, INITIAL_EM, REWARD = (
    "eval/greedy/em",
    "eval/greedy/f1",
    "eval_initial/greedy/em",
    "reward",
)


@dataclass
class MemberResult:
    """One run's numbers: metric histories as {step: value}."""

    run_id: str
    mlflow_run_id: str
    preset: str
    seed: int
    status: str
    error: str = ""
    histories: dict[str, dict[int, float]] = field(default_factory=dict)

    def last(self, key: str) -> float:
        h = self.histories.get(key, {})
        return h[max(h)] if h else math.nan

    def best(self, key: str) -> float:
        h = self.histories.get(key, {})
        return max(h.values()) if h else math.nan

    def hops(self) -> dict[str, float]:
        """Greedy EM per hop count at the last evaluation."""
        prefix = EVAL_EM + "/hops_"
        return {k[len(prefix) :]: self.last(k) for k in self.histories if k.startswith(prefix)}


def _latest_per_run(runs: list[Any]) -> list[Any]:
    """One MLflow run per training run id: the newest finished one, else the newest."""
    by_id: dict[str, list[Any]] = defaultdict(list)
    for run in runs:
        by_id[run.data.tags.get("a2tgpo.run_id", run.info.run_id)].append(run)
    chosen = []
    for candidates in by_id.values():
        candidates.sort(key=lambda r: r.info.start_time or 0, reverse=True)
        finished = [r for r in candidates if r.info.status == "FINISHED"]
        chosen.append(finished[0] if finished else candidates[0])
    return chosen


def collect(client, *, sweep_id: str = "", run_ids: list[str] | None = None) -> list[MemberResult]:
    """The member runs of a sweep, or the named runs (a2tgpo run ids or MLflow run ids)."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    if sweep_id:
        query = f"tags.`a2tgpo.sweep_id` = '{sweep_id}' and tags.`a2tgpo.role` = 'member'"
        runs = client.search_runs(experiments, query, max_results=5000)
    else:
        runs = []
        for rid in run_ids or []:
            found = client.search_runs(experiments, f"tags.`a2tgpo.run_id` = '{rid}'")
            runs += found or [client.get_run(rid)]
    return [_member(client, run) for run in _latest_per_run(runs)]


def _member(client, run) -> MemberResult:
    histories = {}
    keys = [k for k in run.data.metrics if k in (EVAL_EM, EVAL_F1, INITIAL_EM, REWARD)]
    keys += [k for k in run.data.metrics if k.startswith(EVAL_EM + "/hops_")]
    for key in keys:
        histories[key] = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
    return MemberResult(
        run_id=run.data.tags.get("a2tgpo.run_id", run.info.run_id),
        mlflow_run_id=run.info.run_id,
        preset=run.data.tags.get("a2tgpo.preset", "?"),
        seed=int(run.data.params.get("seed", -1)),
        status=run.info.status,
        error=run.data.tags.get("a2tgpo.error", ""),
        histories=histories,
    )


def summarize(
    members: list[MemberResult], baseline: str = "", order: list[str] | None = None
) -> list[dict[str, Any]]:
    """One row per preset (in `order`, else the baseline first and then by name); the
    numbers are over its finished members."""
    presets = sorted({m.preset for m in members})
    if order:
        presets = [p for p in order if p in presets] + [p for p in presets if p not in order]
    elif (first := _baseline(presets, baseline)) in presets:
        presets = [first] + [p for p in presets if p != first]
    ok = defaultdict(dict)  # preset -> seed -> member
    for m in members:
        if m.status == "FINISHED":
            ok[m.preset][m.seed] = m
    base = _baseline(presets, baseline)
    rows = []
    for preset in presets:
        done = ok[preset]
        row: dict[str, Any] = {
            "preset": preset,
            "seeds": sorted(done),
            "failed": [f"s{m.seed}: {m.error or m.status}" for m in members
                       if m.preset == preset and m.status != "FINISHED"],
        }  # fmt: skip
        for name, key, pick in (
            ("em_last", EVAL_EM, "last"),
            ("em_best", EVAL_EM, "best"),
            ("f1_last", EVAL_F1, "last"),
            ("f1_best", EVAL_F1, "best"),
            ("em_start", INITIAL_EM, "last"),
        ):
            row[name] = mean_ci([getattr(m, pick)(key) for m in done.values()])
        hops = sorted({h for m in done.values() for h in m.hops()}, key=_hop_order)
        row["em_hops"] = {
            h: mean_ci([m.hops().get(h, math.nan) for m in done.values()]) for h in hops
        }
        if base and preset != base:
            theirs = {s: m.last(EVAL_EM) for s, m in ok[base].items()}
            ours = {s: m.last(EVAL_EM) for s, m in done.items()}
            row["vs_baseline"] = paired_difference(ours, theirs)
        rows.append(row)
    return rows


def _hop_order(h: str) -> tuple[int, str]:
    return (int(h), h) if h.isdigit() else (1 << 30, h)


def _baseline(presets: list[str], wanted: str) -> str:
    """The preset the others are paired with: `wanted`, else the one named *grpo."""
    if wanted:
        if wanted not in presets:
            raise ValueError(f"baseline {wanted!r} is not among the presets {presets}")
        return wanted
    grpo = [p for p in presets if p == "grpo" or p.endswith("-grpo")]
    return grpo[0] if grpo else ""


def markdown_table(rows: list[dict[str, Any]], baseline: str = "") -> str:
    """The summary as markdown: one row per preset, then per-hop EM, then failures."""
    base = _baseline([r["preset"] for r in rows], baseline)
    head = ["preset", "seeds", "EM last", "EM best", "F1 last", "F1 best", "EM at start"]
    head.append(f"ΔEM last vs {base} (paired)" if base else "ΔEM vs baseline")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        diff = r.get("vs_baseline")
        cells = [r["preset"], ",".join(map(str, r["seeds"])) or "-"]
        cells += [
            format_cell(r[k]) for k in ("em_last", "em_best", "f1_last", "f1_best", "em_start")
        ]
        cells.append(_diff_cell(diff) if diff else "—")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *_hops_table(rows)]
    failures = [f"- {r['preset']} {f}" for r in rows for f in r["failed"]]
    if failures:
        lines += ["", "Members that failed or have not finished (left out of every number above):"]
        lines += failures
    return "\n".join(lines) + "\n"


def _diff_cell(diff) -> str:
    mark = " *" if diff.significant else ""
    return f"{format_cell(diff, signed=True)}, p={diff.p_value:.2f}{mark}"


def _hops_table(rows: list[dict[str, Any]]) -> list[str]:
    hops = sorted({h for r in rows for h in r["em_hops"]}, key=_hop_order)
    if not hops:
        return []
    lines = ["| preset | " + " | ".join(f"EM {h}-hop" for h in hops) + " |"]
    lines.append("|" + "---|" * (len(hops) + 1))
    for r in rows:
        cells = [format_cell(r["em_hops"][h]) if h in r["em_hops"] else "-" for h in hops]
        lines.append(f"| {r['preset']} | " + " | ".join(cells) + " |")
    return lines


def csv_table(rows: list[dict[str, Any]]) -> str:
    """The summary as CSV: one row per preset and statistic (mean, low, high, n)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["preset", "statistic", "mean", "low", "high", "n", "p_value"])
    for r in rows:
        stats = {k: r[k] for k in ("em_last", "em_best", "f1_last", "f1_best", "em_start")}
        stats |= {f"em_hops_{h}": v for h, v in r["em_hops"].items()}
        if r.get("vs_baseline"):
            stats["em_last_minus_baseline"] = r["vs_baseline"]
        for name, s in stats.items():
            p = getattr(s, "p_value", "")
            writer.writerow([r["preset"], name, s.mean, s.low, s.high, s.n, p])
    return out.getvalue()


def curves_figure(members: list[MemberResult]):
    """Training reward per iteration and held-out greedy EM per evaluation, per preset:
    the mean over seeds with its 95% t band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    presets = list(dict.fromkeys(m.preset for m in members))
    for preset in presets:
        done = [m for m in members if m.preset == preset and m.status == "FINISHED"]
        for ax, key in zip(axes, (REWARD, EVAL_EM), strict=True):
            steps = sorted({s for m in done for s in m.histories.get(key, {})})
            if not steps:
                continue
            curves = [[m.histories.get(key, {}).get(s, math.nan) for s in steps] for m in done]
            band = curve_band(curves)
            ax.plot(steps, band.mean, marker="o", label=f"{preset} (n={len(done)})")
            ax.fill_between(steps, band.low, band.high, alpha=0.15)
    for ax, title in zip(
        axes, ("training reward per iteration", "held-out greedy EM"), strict=True
    ):
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig
