"""`a2tgpo`: a typer CLI over every stage of the pipeline.

Each stage command takes `--config FILE` (YAML or JSON of the config tree) and
`--set key.sub=value` overrides; see `a2tgpo COMMAND --help`.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(width=max(Console().width, 140))


@app.callback()
def root() -> None:
    """A²TGPO pipeline: rollout, IG scoring, advantages, training, evaluation."""


@app.command("demo-estimator")
def demo_estimator(
    groups: int = typer.Option(64, help="Prompt groups in the generated batch."),
    group_size: int = typer.Option(8, help="Rollouts per prompt."),
    max_turns: int = typer.Option(6, help="Most turns per trajectory."),
    seed: int = typer.Option(0, help="Seed of the generated batch."),
) -> None:
    """Run the three estimators on a generated batch and print a per-turn table."""
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
    app()
