"""Every input error the CLI can meet is one line on stderr and exit code 2 (`-v`: with
its traceback): config files and values, datasets, an unreachable store, a run id reused
with other settings, a Prefect server that does not start. Also the process defaults the
CLI sets (Prefect's start-up timeout, telemetry off).

Most cases run in-process (CliRunner: the command's exception, then the line main() would
print); a few run the console script in a subprocess, whose output goes to a log file that
a failing assertion prints."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from a2tgpo.cli import app
from a2tgpo.errors import describe

SECRET = "hunter2Secret"


def one_line_error(args: list[str]) -> str:
    """The command's exception, as the one line main() prints for it."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0 and result.exception is not None, result.output
    message = describe(result.exception)
    assert message is not None, f"not an input error: {result.exception!r}"
    assert "\n" not in message and "Traceback" not in message
    return message


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("missing.yaml", None, "no such file"),
        ("broken.yaml", "train:\n  learning_rate: [1, 2\niterations: 3\n", "invalid YAML"),
        ("broken.json", "{'iterations': 3}", "invalid JSON"),
        ("list.yaml", "- 1\n- 2\n", "must hold a mapping"),
        ("latin1.yaml", b"iterations: 3 # \xff\n", "cannot read it"),
    ],
)
def test_config_file_problems(tmp_path: Path, name, content, expected):
    path = tmp_path / name
    if content is not None:
        write(path, content)
    message = one_line_error(["show-config", "--config", str(path)])
    assert expected in message and str(path) in message


@pytest.mark.parametrize(
    "override, expected",
    [
        ("storage.root=gs://bucket/x", "storage.root: unsupported storage root"),
        ("run_id=../../escaped", "run_id: run_id must be"),
        (f"env.retriever_url=http://u:{SECRET}@h/retrieve", "environment variables"),
        ("train.nope=1", "unknown field 'nope'"),
        ("train.ppo_epochs=0", "greater than or equal to 1"),
    ],
)
def test_config_value_problems(override, expected):
    message = one_line_error(["show-config", "--set", override])
    assert expected in message and SECRET not in message


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("not.parquet", "this is not parquet", "invalid input data: Parquet magic bytes"),
        ("missing.parquet", None, "missing.parquet"),
        ("latin1.jsonl", b'{"question": "caf\xe9", "golden_answers": ["x"]}\n', "not UTF-8"),
        ("noid.jsonl", '{"question": "q?", "golden_answers": ["a"], "id": []}\n', "row 0"),
    ],
)
def test_dataset_problems(tmp_path: Path, name, content, expected):
    path = tmp_path / name
    if content is not None:
        write(path, content)
    args = ["prepare", "--set", f"storage.root={tmp_path / 'runs'}", "--set", "env.kind=search_qa"]
    args += ["--set", f"model.policy={tmp_path / 'model'}", "--set", f"env.dataset={path}"]
    args += ["--set", f"env.eval_dataset={path}"]
    assert expected in one_line_error(args)


def test_an_unreachable_s3_endpoint(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    endpoint = f"http://127.0.0.1:{closed_port()}"
    args = ["advantages", "--scored", "s3://bucket/in", "--out", "s3://bucket/out"]
    args += ["--set", "storage.root=s3://bucket/runs", "--set", f"storage.endpoint_url={endpoint}"]
    args += ["--set", "storage.region=us-east-1"]
    assert one_line_error(args).startswith(f"cannot reach s3 endpoint {endpoint}")


# ---- the console script, in a subprocess ---------------------------------------------


def console_script(tmp_path: Path, *args: str, env: dict[str, str] | None = None):
    """`a2tgpo ARGS` through main(): (exit code, stderr lines, the log file's text)."""
    child_env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    child_env.update({"PREFECT_HOME": str(tmp_path / "prefect"), **(env or {})})
    result = subprocess.run(
        [sys.executable, "-c", "from a2tgpo.cli import main; main()", *args],
        capture_output=True, text=True, cwd=tmp_path, env=child_env, timeout=600,
    )  # fmt: skip
    log = f"$ a2tgpo {' '.join(args)}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    (tmp_path / "cli.log").write_text(log)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return result.returncode, lines, log


def assert_one_line_error(code: int, lines: list[str], log: str, expected: str) -> None:
    assert code == 2, log
    assert "Traceback" not in log, log
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], log  # (Prefect may log after it)


def test_the_console_script_prints_one_line_and_exit_code_2(tmp_path: Path):
    code, lines, log = console_script(tmp_path, "show-config", "--set", "storage.root=gs://b/x")
    assert_one_line_error(code, lines, log, "unsupported storage root")
    code, lines, log = console_script(tmp_path, "-v", "show-config", "--set", "run_id=a/b")
    assert code == 2 and "Traceback" in log and lines[-1].startswith("error: "), log


@pytest.mark.slow
def test_a_run_id_reused_with_other_settings_inside_the_flow(tmp_path: Path):
    """Raised inside the Prefect flow: Prefect logs it (no traceback without -v) and
    re-raises it as is; main() prints its one line."""
    (tmp_path / "runs" / "x").mkdir(parents=True)
    (tmp_path / "runs" / "x" / "run-config.json").write_text('{"seed": 5}')
    code, lines, log = console_script(
        tmp_path, "train", "--set", f"storage.root={tmp_path / 'runs'}", "--set", "run_id=x"
    )
    assert_one_line_error(code, lines, log, "run 'x' was started with other settings (")


@pytest.mark.slow
def test_prefect_server_start_up_failure_says_what_to_do(tmp_path: Path):
    timeout = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "0"}  # fails at once
    code, lines, log = console_script(
        tmp_path, "train", "--set", f"storage.root={tmp_path / 'runs'}", env=timeout
    )
    assert_one_line_error(code, lines, log, "`prefect server start`")
    assert "PREFECT_API_URL" in log and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_an_unreachable_prefect_api_says_what_to_do(tmp_path: Path):
    api = {"PREFECT_API_URL": f"http://127.0.0.1:{closed_port()}/api"}
    code, lines, log = console_script(
        tmp_path, "train", "--set", f"storage.root={tmp_path / 'runs'}", env=api
    )
    assert_one_line_error(
        code, lines, log, f"cannot reach the Prefect API at {api['PREFECT_API_URL']}"
    )
    assert "unset PREFECT_API_URL" in log


def test_the_cli_sets_prefect_and_telemetry_defaults_unless_the_user_did(tmp_path: Path):
    code = (
        "import os, a2tgpo.cli\n"
        "from prefect.settings import get_current_settings\n"
        "s = get_current_settings().server\n"
        "print(s.ephemeral.startup_timeout_seconds, s.analytics_enabled,"
        " os.environ['MLFLOW_DISABLE_TELEMETRY'])\n"
    )
    names = ("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "PREFECT_SERVER_ANALYTICS_ENABLED")
    env = {k: v for k, v in os.environ.items() if k not in (*names, "MLFLOW_DISABLE_TELEMETRY")}

    def run(extra: dict[str, str]) -> str:
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
            env={**env, **extra}, cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert run({}) == ["180", "False", "true"]
    assert run({names[0]: "7"})[0] == "7"


def test_make_run_gives_prefect_time_to_start_unless_the_user_said_otherwise():
    root = Path(__file__).resolve().parents[2]

    def dry_run(extra: dict[str, str]) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_SERVER_")}
        result = subprocess.run(
            ["make", "-n", "run"], capture_output=True, text=True, timeout=120,
            cwd=root, env={**env, **extra},
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    shown = dry_run({})
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=180" in shown
    assert "PREFECT_SERVER_ANALYTICS_ENABLED=false" in shown
    shown = dry_run({"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600"})
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=600" in shown


@pytest.mark.parametrize(
    "args",
    [
        ["advantages", "--scored", f"s3://AKIDX:{SECRET}@bucket/x", "--out", "out"],
        ["evaluate", "--policy", f"https://hub.example/m?token={SECRET}"],
    ],
)
def test_uri_options_refuse_credentials_too(tmp_path: Path, monkeypatch, args):
    """A stage's --<role> URI lands in manifests, evaluate's --policy in Prefect."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "environment variables" in " ".join(result.output.split())
    assert SECRET not in result.output and not list(tmp_path.iterdir())
