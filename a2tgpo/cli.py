"""`a2tgpo`: a typer CLI over every stage of the pipeline.

Every command takes `--preset NAME`, `--config FILE` (YAML or JSON of the config tree)
and repeated `--set key.sub=value` overrides. Stage commands read and write by URI;
`--iteration k` fills in the run layout's URIs (`{storage.root}/{run_id}/iter=k/...`),
so `a2tgpo rollout --iteration 0` runs exactly what the flow would.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from a2tgpo.config import RunConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(width=max(Console().width, 140))

PresetOpt = typer.Option("embedded", "--preset", help="Named preset (a2tgpo.presets).")
ConfigOpt = typer.Option(None, "--config", help="YAML or JSON file with a full config tree.")
SetOpt = typer.Option(None, "--set", help="Override: key.sub=value (repeatable).")
# Third-party loggers that flood INFO output; -v shows them again.
NOISY_LOGGERS = ("httpx", "httpcore", "bm25s", "urllib3", "botocore", "s3fs", "numba", "filelock")
IterOpt = typer.Option(None, "--iteration", help="Fill in URIs from the run layout.")


@app.callback()
def root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    """A²TGPO pipeline: rollout, IG scoring, advantages, training, evaluation."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:  # a line per HTTP request to Prefect's API, per index build, ...
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def load_config(preset: str, config_file: Path | None, sets: list[str] | None) -> RunConfig:
    from pydantic import ValidationError

    from a2tgpo.presets import resolve_config

    base = None
    if config_file is not None:
        text = config_file.read_text()
        if config_file.suffix in (".yaml", ".yml"):
            import yaml

            base = yaml.safe_load(text)
        else:
            base = json.loads(text)
    try:
        return resolve_config(preset, sets or [], base)
    except ValueError as error:  # unknown preset or field, a value of the wrong type
        if isinstance(error, ValidationError):
            raise
        raise typer.BadParameter(str(error)) from error


def _local_uri(value: str | None) -> str | None:
    """A relative local path means the working directory's, as anywhere in a shell
    (inside the library a relative path is relative to storage.root)."""
    if value and "://" not in value and not os.path.isabs(value):
        return os.path.abspath(value)
    return value


def _layout(config: RunConfig):
    from a2tgpo.pipeline import RunLayout

    return RunLayout.of(config)


def _need(value: str | None, name: str) -> None:
    if value is None:
        raise typer.BadParameter(f"give --{name} or --iteration")


def _done(manifest) -> None:
    console.print(f"[green]committed[/green] {manifest.uri}  rows={manifest.num_rows}")
    if manifest.stats:
        console.print_json(json.dumps(manifest.stats, default=str)[:4000])


@app.command()
def train(preset: str = PresetOpt, config: Path = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Run the training flow (Prefect): warm-start, then rollout -> IG -> advantages -> train."""
    from flows.train import train_flow

    cfg = load_config(preset, config, set_)
    result = train_flow(config=cfg)
    console.rule("done")
    console.print(history_table(result["history"]))
    console.print(f"datasets and checkpoints: {result['storage']}")
    console.print(f"MLflow: {result['mlflow']}")
    home = os.environ.get("PREFECT_HOME", "~/.prefect")
    console.print(
        f"Prefect UI: PREFECT_HOME={home} prefect server start, then open http://127.0.0.1:4200"
    )


def history_table(history: list[dict[str, float]]) -> Table:
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
) -> None:
    """Run the evaluation flow: EM / F1 per data source, greedy and sampled."""
    from flows.evaluate import evaluate_flow

    cfg = load_config(preset, config, set_)
    console.print_json(json.dumps(evaluate_flow(config=cfg, policy_uri=policy), default=str))


@app.command("make-tiny-model")
def make_tiny_model(
    out: Path = typer.Argument(..., help="Folder to write."),
    preset: str = PresetOpt,
    config: Path = ConfigOpt,
    set_: list[str] = SetOpt,
    overwrite: bool = typer.Option(False, help="Replace an existing folder."),
) -> None:
    """Build the project's tiny Qwen2 model (tokenizer trained on the environment's text)."""
    from a2tgpo.engines.tiny_model import build_tiny_model
    from a2tgpo.pipeline import environment_texts

    cfg = load_config(preset, config, set_)
    m = cfg.model
    path = build_tiny_model(
        out,
        environment_texts(cfg),
        hidden=m.tiny_hidden,
        layers=m.tiny_layers,
        heads=m.tiny_heads,
        vocab_size=m.tiny_vocab,
        max_positions=m.tiny_max_positions,
        seed=cfg.seed,
        overwrite=overwrite,
    )
    console.print(f"[green]wrote[/green] {path}")


@app.command()
def prepare(
    preset: str = PresetOpt,
    config: Path = ConfigOpt,
    set_: list[str] = SetOpt,
    iteration: int = IterOpt,
) -> None:
    """Initial model and prompt pools (and the prompts of --iteration k)."""
    from a2tgpo.pipeline import ensure_initial_model, ensure_prompt_pool, sample_prompts
    from a2tgpo.rollout.agent import derive_seed

    cfg = load_config(preset, config, set_)
    layout = _layout(cfg)
    console.print(f"initial policy: {ensure_initial_model(cfg, layout)}")
    pool = ensure_prompt_pool(cfg, layout, "train")
    console.print(f"train prompts: {pool}")
    if iteration is not None:
        seed = derive_seed("prompts", cfg.seed, iteration) % (1 << 32)
        _done(
            sample_prompts(
                cfg,
                layout,
                pool,
                layout.stage(iteration, "prompts"),
                cfg.rollout.prompts_per_iteration,
                seed,
            )
        )


@app.command()
def warmstart(preset: str = PresetOpt, config: Path = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Supervised warm-start on synthetic demonstrations (DeepSpeed, SFT)."""
    from a2tgpo.pipeline import ensure_initial_model
    from a2tgpo.training.warmstart import run_warmstart

    cfg = load_config(preset, config, set_)
    layout = _layout(cfg)
    init = ensure_initial_model(cfg, layout)
    _done(run_warmstart(cfg, init_uri=init, demos_uri=layout.demos, out_uri=layout.warmstart))


@app.command()
def rollout(
    preset: str = PresetOpt,
    config: Path = ConfigOpt,
    set_: list[str] = SetOpt,
    iteration: int = IterOpt,
    prompts: str = typer.Option(None, help="Prompts URI.", callback=_local_uri),
    policy: str = typer.Option(
        None, help="Policy URI (checkpoint or model folder).", callback=_local_uri
    ),
    out: str = typer.Option(None, help="Output trajectories URI.", callback=_local_uri),
    version: int = typer.Option(None, help="Policy version recorded in the rows."),
) -> None:
    """Generate trajectories with the multi-turn search agent (vLLM or HF)."""
    from a2tgpo.rollout.stage import run_rollout
    from a2tgpo.training.checkpoints import local_policy

    cfg = load_config(preset, config, set_)
    layout = _layout(cfg)
    if iteration is not None:
        prompts = prompts or layout.stage(iteration, "prompts")
        policy = policy or layout.policy(cfg, iteration)
        out = out or layout.stage(iteration, "trajectories")
        version = iteration if version is None else version
    for value, name in ((prompts, "prompts"), (policy, "policy"), (out, "out")):
        _need(value, name)
    policy_dir = str(local_policy(layout.storage, policy))
    _done(
        run_rollout(
            cfg,
            prompts_uri=prompts,
            policy_dir=policy_dir,
            out_uri=out,
            policy_version=version or 0,
            parents=[prompts, policy],
        )
    )


@app.command("score-ig")
def score_ig(
    preset: str = PresetOpt,
    config: Path = ConfigOpt,
    set_: list[str] = SetOpt,
    iteration: int = IterOpt,
    trajectories: str = typer.Option(None, help="Trajectories URI.", callback=_local_uri),
    policy: str = typer.Option(
        None, help="Policy URI: the policy that generated them.", callback=_local_uri
    ),
    out: str = typer.Option(None, help="Output scored URI.", callback=_local_uri),
) -> None:
    """Teacher-forced information gain per turn (naive / packed / vLLM scorer)."""
    from a2tgpo.scoring.stage import run_score_ig

    cfg = load_config(preset, config, set_)
    layout = _layout(cfg)
    if iteration is not None:
        trajectories = trajectories or layout.stage(iteration, "trajectories")
        policy = policy or layout.policy(cfg, iteration)
        out = out or layout.stage(iteration, "scored")
    for value, name in ((trajectories, "trajectories"), (policy, "policy"), (out, "out")):
        _need(value, name)
    if cfg.ig.scorer == "vllm":
        from a2tgpo.engines import make_engine
        from a2tgpo.rollout.stage import engine_options
        from a2tgpo.training.checkpoints import local_policy

        with make_engine(
            "vllm", str(local_policy(layout.storage, policy)), **engine_options(cfg)
        ) as eng:
            _done(
                run_score_ig(
                    cfg, trajectories_uri=trajectories, policy_uri=policy, out_uri=out, engine=eng
                )
            )
        return
    _done(run_score_ig(cfg, trajectories_uri=trajectories, policy_uri=policy, out_uri=out))


@app.command()
def advantages(
    preset: str = PresetOpt,
    config: Path = ConfigOpt,
    set_: list[str] = SetOpt,
    iteration: int = IterOpt,
    scored: str = typer.Option(None, help="Scored URI.", callback=_local_uri),
    out: str = typer.Option(None, help="Output advantaged URI.", callback=_local_uri),
) -> None:
    """Per-turn advantages and clip ranges (the configured estimator)."""
    from a2tgpo.training.advantages import run_advantages

    cfg = load_config(preset, config, set_)
    layout = _layout(cfg)
    if iteration is not None:
        scored = scored or layout.stage(iteration, "scored")
        out = out or layout.stage(iteration, "advantaged")
    for value, name in ((scored, "scored"), (out, "out")):
        _need(value, name)
    _done(run_advantages(cfg, scored_uri=scored, out_uri=out))


@app.command("train-step")
def train_step(
    preset: str = PresetOpt,
    config: Path = ConfigOpt,
    set_: list[str] = SetOpt,
    iteration: int = IterOpt,
    advantaged: str = typer.Option(None, help="Advantaged URI.", callback=_local_uri),
    policy: str = typer.Option(None, help="Policy checkpoint URI to update.", callback=_local_uri),
    out: str = typer.Option(None, help="Output checkpoint URI.", callback=_local_uri),
    version: int = typer.Option(None, help="Version of the written policy."),
) -> None:
    """One DeepSpeed ZeRO-3 policy update (subprocess workers), committed as a checkpoint."""
    from a2tgpo.training.launcher import run_train_step

    cfg = load_config(preset, config, set_)
    layout = _layout(cfg)
    if iteration is not None:
        advantaged = advantaged or layout.stage(iteration, "advantaged")
        policy = policy or layout.policy(cfg, iteration)
        out = out or layout.stage(iteration, "checkpoint")
        version = iteration + 1 if version is None else version
    for value, name in ((advantaged, "advantaged"), (policy, "policy"), (out, "out")):
        _need(value, name)
    _done(
        run_train_step(
            cfg,
            advantaged_uri=advantaged,
            policy_uri=policy,
            out_uri=out,
            policy_version=version or 1,
            reference_uri=layout.initial_policy(cfg),
            stream=True,
        )
    )


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
    """The console script: input problems print one line, not a traceback (-v: both)."""
    import pydantic

    from a2tgpo.data.errors import DatasetValidationError, NotCommitted, StageMismatch

    expected = (NotCommitted, DatasetValidationError, StageMismatch, pydantic.ValidationError)
    try:
        # the click command itself: Typer's own wrapper would print these as tracebacks
        typer.main.get_command(app)()
    except expected as error:
        if "-v" in sys.argv or "--verbose" in sys.argv:
            raise
        console.print(f"[red]error:[/red] {error}")
        raise SystemExit(2) from None
