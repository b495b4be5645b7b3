"""`a2tgpo sweep` (the estimator comparison flow) and `a2tgpo compare` (its table, for
any set of finished runs, read from MLflow)."""

from __future__ import annotations

import typer

from a2tgpo.cli_common import SetOpt, app, console


def parse_seeds(text: str) -> list[int]:
    """'3' -> [0, 1, 2]; '0,4,7' -> [0, 4, 7]."""
    try:
        if "," not in text and text.strip().isdigit():
            return list(range(int(text)))
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"--seeds: a count or a comma list of integers, got {text!r}"
        ) from None


@app.command()
def sweep(
    presets: str = typer.Option(..., help="Comma-separated presets, e.g. hard-grpo,hard-a2tgpo."),
    seeds: str = typer.Option("3", help="Seed count N (seeds 0..N-1) or a list: 0,4,7."),
    set_: list[str] = SetOpt,
    sweep_id: str = typer.Option("sweep", help="Name of the sweep; a rerun resumes it."),
    share_warmstart: bool = typer.Option(
        True, help="Train one warm-start per seed and start every preset from it."
    ),
    work_pool_deployment: str = typer.Option(
        "", help="Run members through this deployment (e.g. a2tgpo-train/gpu) on its pool."
    ),
    baseline: str = typer.Option("", help="Preset the others are paired with (default *grpo)."),
) -> None:
    """Train every preset x seed and print the comparison table (mean ± 95% t CI)."""
    from a2tgpo.sweep import SweepSpec, plan_members

    spec = SweepSpec(sweep_id, [p.strip() for p in presets.split(",") if p.strip()],
                     parse_seeds(seeds), list(set_ or []), share_warmstart)  # fmt: skip
    try:
        plan_members(spec)  # refuse a sweep that cannot run, before Prefect starts
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    from flows.sweep import sweep_flow

    result = sweep_flow(
        sweep_id=spec.sweep_id,
        presets=spec.presets,
        seeds=spec.seeds,
        overrides=spec.overrides,
        share_warmstart=share_warmstart,
        work_pool_deployment=work_pool_deployment,
        baseline=baseline,
    )
    console.print(result["table"])


@app.command()
def compare(
    run_ids: list[str] = typer.Argument(None, help="Runs to compare (a2tgpo or MLflow run ids)."),
    sweep_id: str = typer.Option("", "--sweep", help="Compare the members of this sweep."),
    mlflow_uri: str = typer.Option(
        "", help="MLflow tracking URI; empty = the local store under ./runs."
    ),
    baseline: str = typer.Option("", help="Preset the others are paired with (default *grpo)."),
    csv_out: bool = typer.Option(False, "--csv", help="Print CSV instead of markdown."),
) -> None:
    """Print the comparison table of finished runs from MLflow."""
    from mlflow.tracking import MlflowClient

    from a2tgpo.analysis.compare import collect, csv_table, markdown_table, summarize
    from a2tgpo.config import RunConfig
    from a2tgpo.tracking.mlflow_logger import tracking_uri

    if not sweep_id and not run_ids:
        raise typer.BadParameter("give --sweep ID or run ids")
    client = MlflowClient(mlflow_uri or tracking_uri(RunConfig()))
    members = collect(client, sweep_id=sweep_id, run_ids=run_ids)
    if not members:
        raise typer.BadParameter("no such runs in MLflow")
    rows = summarize(members, baseline)
    typer.echo(csv_table(rows) if csv_out else markdown_table(rows, baseline))
