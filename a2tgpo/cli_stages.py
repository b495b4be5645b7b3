"""The stage commands, generated from the stage contract (`a2tgpo.stages.contract`).

Each declared stage gets a command of its name (`a2tgpo rollout`, `a2tgpo score-ig`,
...) with `--preset/--config/--set`, `--iteration k` (the run layout's URIs and seed for
iteration k, exactly what the flow runs) and one `--<role> URI` option per input and
output of the stage, which replace the planned URI. `evaluate` is the evaluation flow's
command (a2tgpo/cli.py), which runs the same declared stage.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

import typer

from a2tgpo.cli_common import (
    ConfigOpt,
    IterOpt,
    PresetOpt,
    SetOpt,
    _done,
    _local_uri,
    app,
    console,
    load_config,
)
from a2tgpo.stages.contract import RUN_WIDE_ROLES, STAGES, URI_HELP, Stage

FLOW_COMMANDS = {"evaluate"}  # stages whose command runs a flow (a2tgpo/cli.py)
# Stages that store or compare rollout log-probs: they warn when those are not of the
# distribution sampled (the train flow warns once at its start instead).
LOGPROB_STAGES = {"rollout", "train-step"}


@app.command("make-tiny-model")
def make_tiny_model(
    out: Path = typer.Argument(..., help="Folder to write."),
    preset: str = PresetOpt,
    config: Path = ConfigOpt,
    set_: list[str] = SetOpt,
    overwrite: bool = typer.Option(False, help="Replace an existing folder."),
) -> None:
    """Build the project's tiny Qwen2 model (tokenizer trained on the environment's text)."""
    from a2tgpo.stages.prepare import build_configured_tiny_model

    path = build_configured_tiny_model(load_config(preset, config, set_), out, overwrite)
    console.print(f"[green]wrote[/green] {path}")


def run_stage_command(stage: Stage, cfg, iteration: int | None, uris: dict[str, str | None]):
    """Plan the stage (layout URIs for `iteration`), apply explicit URIs, run it."""
    from a2tgpo.rollout.session import EngineSession

    if stage.per_iteration and iteration is None:
        missing = [r for r, uri in uris.items() if uri is None and r not in RUN_WIDE_ROLES]
        if missing:
            raise typer.BadParameter(f"give --{missing[0]} or --iteration")
        iteration = 0  # every URI is explicit; the plan only supplies the seed rule
    plan = stage.plan(cfg, iteration).override(**uris)
    if stage.name in LOGPROB_STAGES:
        from a2tgpo.engines.options import logprob_mismatch_warning

        if warning := logprob_mismatch_warning(cfg):
            logging.getLogger("a2tgpo.cli").warning(warning)
    with EngineSession(cfg) as session:
        result = stage.run(cfg, plan, session, stream=True)
    for manifest in result.values() if isinstance(result, dict) else [result]:
        _done(manifest) if hasattr(manifest, "uri") else console.print(manifest)


def stage_command(stage: Stage):
    """A typer command for `stage`: its signature lists the stage's URI roles as options."""
    example = stage.plan(_example_config(), 0 if stage.per_iteration else None)
    roles = [*example.inputs, *example.outputs]

    def command(preset: str, config: Path | None, set_: list[str] | None, iteration, **uris):
        cfg = load_config(preset, config, set_)
        run_stage_command(stage, cfg, iteration, uris)

    params = [
        inspect.Parameter("preset", inspect.Parameter.KEYWORD_ONLY, default=PresetOpt, annotation=str),
        inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=ConfigOpt, annotation=Path),
        inspect.Parameter("set_", inspect.Parameter.KEYWORD_ONLY, default=SetOpt, annotation=list[str]),
    ]  # fmt: skip
    if stage.per_iteration:
        params.append(
            inspect.Parameter("iteration", inspect.Parameter.KEYWORD_ONLY, default=IterOpt, annotation=int)
        )  # fmt: skip
    for role in roles:
        option = typer.Option(None, f"--{role.replace('_', '-')}", callback=_local_uri,
                              help=URI_HELP.get(role, f"{role} URI."))  # fmt: skip
        params.append(
            inspect.Parameter(role, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=str)
        )
    command.__signature__ = inspect.Signature(params)
    command.__doc__ = stage.summary
    command.__name__ = stage.name.replace("-", "_")
    if not stage.per_iteration:
        inner = command

        def command(**kwargs):
            inner(iteration=None, **kwargs)

        command.__signature__ = inspect.Signature(params)
        command.__doc__ = stage.summary
    return command


def _example_config():
    from a2tgpo.config import RunConfig

    return RunConfig()


for _stage in STAGES.values():
    if _stage.name not in FLOW_COMMANDS:
        app.command(_stage.name)(stage_command(_stage))
