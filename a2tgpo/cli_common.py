"""What every `a2tgpo` command shares: the Typer app, the console, the process
environment and logging, the config options and their resolution, and the URI helpers.
Commands live in a2tgpo/cli.py (runs) and a2tgpo/cli_stages.py (one stage each)."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from a2tgpo.config import RunConfig
from a2tgpo.config_rules import refuse_credentials
from a2tgpo.errors import ConfigFileError, InputError, describe, one_line

# Read once, when Prefect / MLflow are first imported (after this module, before any
# command runs): so set here, unless the user set them. Prefect's 20 s for its temporary
# server are not enough on a busy machine; nothing phones home (MLflow's two are those of
# a2tgpo.tracking.mlflow_logger.disable_mlflow_telemetry, which the flows also call).
# vLLM's INFO lines (hundreds per engine start) would bury the run's own progress; its
# warnings still show, and VLLM_LOGGING_LEVEL=INFO brings the rest back.
DEFAULT_ENVIRONMENT = {
    "VLLM_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
}
for _key, _value in DEFAULT_ENVIRONMENT.items():
    os.environ.setdefault(_key, _value)

CLI_HELP = """`a2tgpo`: a typer CLI over every stage of the pipeline.

Every command takes `--preset NAME`, `--config FILE` (YAML or JSON config values, merged
on top of the preset: a partial tree is fine) and repeated `--set key.sub=value`
overrides, applied last. An input error prints one line and exits 2 (`-v`: with its
traceback). Stage commands read and write by URI; `--iteration k` fills in the run
layout's URIs (`{storage.root}/{run_id}/iter=k/...`), so `a2tgpo rollout --iteration 0`
runs exactly what the flow would.
"""
app = typer.Typer(add_completion=False, no_args_is_help=True, help=CLI_HELP)
console = Console(width=max(Console().width, 140))

PresetOpt = typer.Option("embedded", "--preset", help="Named preset (a2tgpo.presets).")
ConfigOpt = typer.Option(
    None,
    "--config",
    help="YAML or JSON file of config values, merged on top of the preset (a partial tree "
    "is fine); --set overrides apply after it.",
)
SetOpt = typer.Option(None, "--set", help="Override: key.sub=value (repeatable).")
# Third-party loggers that flood INFO output; -v shows them again.
NOISY_LOGGERS = ("httpx", "httpcore", "bm25s", "urllib3", "botocore", "s3fs", "numba", "filelock")
IterOpt = typer.Option(None, "--iteration", help="Fill in URIs from the run layout.")


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@app.callback()
def root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    """A²TGPO pipeline: rollout, IG scoring, advantages, training, evaluation."""
    configure_logging(verbose)


def configure_logging(verbose: bool) -> None:
    """Log to stderr, secrets redacted from every record; without -v, no traceback for an
    input error (main() prints its line). A host that set up logging itself (pytest, a
    notebook running the app) keeps it as it is, as with logging.basicConfig."""
    root_logger = logging.getLogger()
    if not root_logger.handlers:
        install_secret_redaction()
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter(LOG_FORMAT) if verbose else InputErrorsWithoutTraceback(LOG_FORMAT)
        )
        root_logger.addHandler(handler)
        root_logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:  # a line per HTTP request to Prefect's API, per index build, ...
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


class InputErrorsWithoutTraceback(logging.Formatter):
    """Prefect logs every failed flow and task run with its traceback: for an error the
    user can fix, the message is enough (main() prints the error itself, in one line)."""

    def format(self, record: logging.LogRecord) -> str:
        if not (record.exc_info and describe(record.exc_info[1]) is not None):
            return super().format(record)
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            return super().format(record)
        finally:
            record.exc_info, record.exc_text = saved


# Environment variables whose values never appear in a log line (botocore's DEBUG lines
# carry the access key id in every signed request's Authorization header).
SECRET_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)
_SECRET_HEADERS = r"(?:authorization|x-amz-security-token)"
_REDACTIONS = (
    # 'Authorization': b'AWS4-HMAC-SHA256 Credential=...' (a repr of a headers dict)
    (re.compile(rf"(?i)(['\"]?{_SECRET_HEADERS}['\"]?\s*[:=]\s*b?)(['\"])(.*?)\2"), r"\1\2***\2"),
    # Authorization: Bearer ... (an HTTP header line, a canonical request line)
    (re.compile(rf"(?im)^(\s*{_SECRET_HEADERS}\s*:\s*)(?!['\"]|b['\"])\S.*$"), r"\1***"),
    # ?X-Amz-Signature=...&X-Amz-Credential=... (a presigned URL)
    (re.compile(r"(?i)([?&]x-amz-(?:signature|credential|security-token)=)[^&\s'\"]+"), r"\1***"),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@'\"]+@"), r"\1***@"),  # user:password@
)


def redact(text: str) -> str:
    """`text` without the values of SECRET_ENV, secret headers, signatures or userinfo."""
    for name in SECRET_ENV:
        value = os.environ.get(name, "")
        if len(value) >= 6:  # a short dummy value ("x") would blank out every "x"
            text = text.replace(value, "***")
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def redact_record(record: logging.LogRecord) -> None:
    """Redact a record's message and traceback in place."""
    try:
        message = record.getMessage()
    except Exception:  # a malformed logging call: logging reports it at emit time
        return
    if (clean := redact(message)) != message:
        record.msg, record.args = clean, None
    if record.exc_info and not record.exc_text:
        text = logging.Formatter().formatException(record.exc_info)
        if (clean := redact(text)) != text:
            record.exc_text = clean


def install_secret_redaction() -> None:
    """Redact every log record when it is made: before any handler sees it (ours, Prefect's
    API handler, a test's capture), whatever logger it comes from. Idempotent."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacts_secrets", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        redact_record(record)
        return record

    factory.redacts_secrets = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def load_config(preset: str, config_file: Path | None, sets: list[str] | None) -> RunConfig:
    """The preset, the `--config` file's values merged on top of it, then the overrides."""
    from pydantic import ValidationError

    from a2tgpo.presets import resolve_config

    try:
        partial = read_config_file(config_file) if config_file is not None else None
        return resolve_config(preset, sets or [], partial)
    except (ValidationError, InputError):  # main() prints either in one line
        raise
    except ValueError as error:  # an unknown preset or field, a malformed override
        raise InputError(str(error)) from error


def read_config_file(path: Path) -> dict[str, Any]:
    """A config file's mapping (YAML for .yaml / .yml, else JSON); empty YAML = {}."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigFileError(f"--config {path}: cannot read it ({error})") from None
    try:
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as error:
        raise ConfigFileError(f"--config {path}: {_syntax_error(error)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"--config {path}: must hold a mapping of config sections")
    return data


def _syntax_error(error: Exception) -> str:
    """Where a YAML / JSON file breaks, without quoting its text (it may hold a secret)."""
    mark = getattr(error, "problem_mark", None)
    if mark is not None:
        problem = getattr(error, "problem", None) or "syntax error"
        return f"invalid YAML: {problem} (line {mark.line + 1}, column {mark.column + 1})"
    if isinstance(error, json.JSONDecodeError):
        return f"invalid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
    return f"invalid YAML: {one_line(str(error))}"


def _local_uri(value: str | None) -> str | None:
    """A relative local path means the working directory's, as anywhere in a shell
    (inside the library a relative path is relative to storage.root). A URI holding a
    credential is refused, as in the config: it would land in manifests and Prefect."""
    try:
        refuse_credentials(value)
    except InputError as error:
        raise typer.BadParameter(str(error)) from None
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
