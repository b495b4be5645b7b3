"""`a2tgpo`: a typer CLI over every stage of the pipeline.

Every command takes `--preset NAME`, `--config FILE` (YAML or JSON config values merged
on top of the preset) and repeated `--set key.sub=value` overrides. Stage commands read
and write by URI; `--iteration k` fills in the run layout's URIs
(`{storage.root}/{run_id}/iter=k/...`), so `a2tgpo rollout --iteration 0` runs exactly
what the flow would.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

import a2tgpo.cli_retriever  # registers serve-retriever
import a2tgpo.cli_stages
import a2tgpo.cli_sweep  # noqa: F401  (registers sweep and compare)
from a2tgpo.cli_common import (
    ConfigOpt,
    PresetOpt,
    SetOpt,
    _local_uri,
    app,
    console,
    load_config,
)
from a2tgpo.errors import describe


def shown_preset(cfg, preset: str) -> str:
    """The preset parameter Prefect shows: the config's own (a `--config` file or `--set`
    may rename it to a label that is no preset: then the one it started from)."""
    from a2tgpo.presets import PRESETS

    return cfg.preset if cfg.preset in PRESETS else preset


@app.command()
def train(preset: str = PresetOpt, config: Path = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Run the training flow (Prefect): warm-start, then rollout -> IG -> advantages -> train."""
    from flows.train import train_flow

    cfg = load_config(preset, config, set_)
    result = train_flow(preset=shown_preset(cfg, preset), config=cfg)
    console.rule("done")
    console.print(history_table(result["history"]))
    for line in run_links(result):
        console.print(line, soft_wrap=True)  # whole URLs: a terminal can open them


def run_links(result: dict[str, Any]) -> list[str]:
    """Where the run's outputs are: storage, then the MLflow run and the Prefect flow run
    as URLs (with the command serving the UI when it is not a running server)."""
    lines = [f"datasets and checkpoints: {result['storage']}"]
    if result.get("mlflow_ui"):
        lines.append(f"MLflow run: {result['mlflow']}  (start the UI: {result['mlflow_ui']})")
    else:
        lines.append(f"MLflow run: {result['mlflow']}")
    if result.get("prefect_ui"):
        lines.append(
            f"Prefect flow run: {result['prefect']}  (it ran on a temporary server; start "
            f"the UI on its database: {result['prefect_ui']})"
        )
    elif result.get("prefect"):
        lines.append(f"Prefect flow run: {result['prefect']}")
    return lines


def history_table(history: list[dict[str, Any]]) -> Table:
    """Reward, EM and F1 per iteration, with the evaluations where one ran."""
    columns = ["iteration", "reward", "em", "f1", "eval_greedy_em", "eval_sampled_em"]
    table = Table(title="training run", show_edge=False)
    for name in columns:
        table.add_column(name.replace("_", " "), justify="right")
    for row in history:
        table.add_row(
            *(
                str(row[c]) if c == "iteration" else f"{row[c]:.3f}" if c in row else "-"
                for c in columns
            )
        )
    return table


@app.command()
def evaluate(
    preset: str = PresetOpt,
    config: Path = ConfigOpt,
    set_: list[str] = SetOpt,
    policy: str = typer.Option(
        "", help="Policy URI; empty = newest checkpoint.", callback=_local_uri
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON instead."),
) -> None:
    """Run the evaluation flow: EM / F1 per data source, greedy and sampled (the
    seven-benchmark table on a search-QA file)."""
    from flows.evaluate import evaluate_flow

    cfg = load_config(preset, config, set_)
    result = evaluate_flow(preset=shown_preset(cfg, preset), config=cfg, policy_uri=policy)
    if as_json:
        console.print_json(json.dumps(result, default=str))
        return
    console.print(benchmark_table(result["results"], title=f"policy {result['policy']}"))


def benchmark_table(results: dict[str, Any], title: str = "") -> Table:
    """EM / F1 per benchmark in the papers' column order (a2tgpo.analysis.benchmarks)."""
    from a2tgpo.analysis.benchmarks import benchmark_rows

    rows = benchmark_rows(results)
    names = list(dict.fromkeys(k for row in rows for k in row if k not in ("mode", "metric")))
    table = Table(title=title, show_edge=False)
    for name in ("mode", "metric", *names):
        table.add_column(name, justify="left" if name in ("mode", "metric") else "right")
    for row in rows:
        cells = [row.get(n) for n in names]
        shown = [
            f"{c:.3f}" if isinstance(c, float) else "-" if c is None else str(c) for c in cells
        ]
        table.add_row(row["mode"], row["metric"], *shown)
    return table


@app.command("show-config")
def show_config(
    preset: str = PresetOpt, config: Path = ConfigOpt, set_: list[str] = SetOpt
) -> None:
    """Print the resolved config tree (JSON)."""
    console.print_json(load_config(preset, config, set_).model_dump_json())


@app.command("demo-estimator")
def demo_estimator(
    groups: int = typer.Option(64, help="Prompt groups in the generated batch."),
    group_size: int = typer.Option(8, help="Rollouts per prompt."),
    max_turns: int = typer.Option(6, help="Most turns per trajectory."),
    seed: int = typer.Option(0, help="Seed of the generated batch."),
) -> None:
    """Run the three estimators on a generated batch and print a per-turn table."""
    from rich.table import Table

    from a2tgpo.estimator_demo import per_turn_table, random_turn_batch

    batch = random_turn_batch(groups, group_size, max_turns, seed)
    console.print(
        f"generated batch: {groups} groups x {group_size} rollouts, "
        f"{batch.turn.size} turns, up to {max_turns} per trajectory"
    )
    for estimator in ("grpo", "igpo", "a2tgpo"):
        table = Table(title=f"estimator = {estimator}")
        rows = per_turn_table(batch, estimator=estimator)
        for column in rows[0]:
            table.add_column(column, justify="right")
        for row in rows:
            table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
        console.print(table)


def main() -> None:  # pragma: no cover - console entry
    """The console script: an error the user can fix (a2tgpo.errors.describe) prints one
    line on stderr and exits 2 (-v: after its traceback); any other error is a bug and
    keeps Python's traceback. Errors raised inside a Prefect flow reach here as raised."""
    from a2tgpo import supervise

    if supervise.should_supervise(sys.argv[1:]):  # long commands: nothing outlives them
        raise SystemExit(supervise.run_supervised(sys.argv))
    try:
        # the click command itself: Typer's own wrapper would print these as tracebacks
        typer.main.get_command(app)()
    except Exception as error:
        if (message := describe(error)) is None:
            raise
        if "-v" in sys.argv or "--verbose" in sys.argv:
            traceback.print_exception(error)
        typer.secho(f"error: {message}", err=True, fg="red")
        raise SystemExit(2) from None
