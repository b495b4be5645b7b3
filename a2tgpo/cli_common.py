"""What every `a2tgpo` command shares: the Typer app, the console, the config options
and their resolution, and the URI helpers. Commands live in a2tgpo/cli.py (runs) and
a2tgpo/cli_stages.py (one stage each)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import typer
from rich.console import Console

from a2tgpo.config import RunConfig

CLI_HELP = """`a2tgpo`: a typer CLI over every stage of the pipeline.

Every command takes `--preset NAME`, `--config FILE` (YAML or JSON of the config tree)
and repeated `--set key.sub=value` overrides. Stage commands read and write by URI;
`--iteration k` fills in the run layout's URIs (`{storage.root}/{run_id}/iter=k/...`),
so `a2tgpo rollout --iteration 0` runs exactly what the flow would.
"""
app = typer.Typer(add_completion=False, no_args_is_help=True, help=CLI_HELP)
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


def _done(manifest) -> None:
    console.print(f"[green]committed[/green] {manifest.uri}  rows={manifest.num_rows}")
    if manifest.stats:  # cut long lists, never the JSON text (a cut text does not parse)
        console.print_json(json.dumps(_shortened(manifest.stats), default=str))


def _shortened(value, most: int = 12):
    """The value with every list longer than `most` cut to its head and a count."""
    if isinstance(value, dict):
        return {k: _shortened(v, most) for k, v in value.items()}
    if isinstance(value, list) and len(value) > most:
        return [*(_shortened(v, most) for v in value[:most]), f"... {len(value) - most} more"]
    if isinstance(value, list):
        return [_shortened(v, most) for v in value]
    return value
