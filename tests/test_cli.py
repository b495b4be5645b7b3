"""The typer CLI: config resolution, input errors as one line (exit 2), relative paths,
and a stage (`advantages`) run alone from the command line on a local store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from a2tgpo.cli import _local_uri, app

runner = CliRunner()


def console_script(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`a2tgpo ARGS` through the console entry point (its error handling included)."""
    code = "from a2tgpo.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd
    )


def test_show_config_applies_presets_and_overrides(tmp_path: Path):
    result = runner.invoke(
        app, ["show-config", "--preset", "grpo", "--set", "rollout.group_size=3"]
    )
    assert result.exit_code == 0, result.output
    config = json.loads(result.output)
    assert config["estimator"]["name"] == "grpo" and config["rollout"]["group_size"] == 3

    file = tmp_path / "run.yaml"
    file.write_text("iterations: 3\ntrain:\n  learning_rate: 0.01\n")
    result = runner.invoke(app, ["show-config", "--config", str(file), "--set", "iterations=4"])
    config = json.loads(result.output)
    assert config["iterations"] == 4 and config["train"]["learning_rate"] == 0.01


def test_a_config_file_is_merged_on_top_of_the_preset(tmp_path: Path):
    """`--config partial.yaml --preset grpo`: the preset's tree, the file's values on top,
    then --set (the preset used to be ignored silently)."""
    file = tmp_path / "partial.yaml"
    file.write_text("rollout:\n  group_size: 3\ntrain:\n  learning_rate: 0.01\n")
    args = ["show-config", "--preset", "grpo", "--config", str(file)]
    result = runner.invoke(app, [*args, "--set", "train.ppo_epochs=2", "--set", "run_id=123"])
    assert result.exit_code == 0, result.output
    config = json.loads(result.output)
    assert config["estimator"]["name"] == "grpo" and config["preset"] == "grpo"
    assert config["rollout"]["group_size"] == 3 and config["train"]["learning_rate"] == 0.01
    assert config["train"]["ppo_epochs"] == 2 and config["run_id"] == "123"
    full = tmp_path / "full.json"  # a full tree (show-config's output) is itself again
    full.write_text(result.output)
    again = runner.invoke(app, ["show-config", "--preset", "a2tgpo", "--config", str(full)])
    assert json.loads(again.output) == config


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "train.nope=1"], "unknown field 'nope'"),
        (["--preset", "nope"], "nope"),
        (["--set", "train.ppo_epochs=0"], "greater than or equal to 1"),
    ],
)
def test_bad_config_input_is_one_clear_error(args, message):
    result = console_script("show-config", *args)
    assert result.returncode == 2
    assert message in " ".join((result.stdout + result.stderr).split())
    assert "Traceback" not in result.stdout + result.stderr


def test_a_missing_input_stage_is_one_line_not_a_traceback(tmp_path: Path):
    result = console_script("advantages", "--scored", "missing", "--out", "out", cwd=tmp_path)
    assert result.returncode == 2
    last = result.stderr.splitlines()[-1]  # errors go to stderr, on one line
    assert last == f"error: stage {tmp_path / 'missing'} is not committed (no manifest.json)"
    assert "Traceback" not in result.stdout + result.stderr


def test_the_rollout_command_warns_when_logprobs_are_not_of_the_sampled_distribution(
    tmp_path: Path,
):
    args = ["rollout", "--prompts", "missing", "--policy", "missing", "--out", "out"]
    result = console_script(*args, "--set", "rollout.top_p=0.9", cwd=tmp_path)
    assert result.returncode == 2  # the input is missing; the warning came first
    assert "WARNING" in result.stderr and "compares different distributions" in result.stderr
    assert "mismatch/*/turn_k" not in console_script(*args, cwd=tmp_path).stderr  # defaults agree


def test_relative_local_paths_are_the_working_directory_s():
    assert _local_uri("runs/x") == os.path.abspath("runs/x")
    assert _local_uri("/abs/x") == "/abs/x"
    assert _local_uri("s3://bucket/x") == "s3://bucket/x"
    assert _local_uri(None) is None


def test_advantages_stage_alone(tmp_path: Path, monkeypatch):
    """A scored dataset in, the advantaged dataset committed by URI, stats printed."""
    from a2tgpo.config import StorageConfig
    from a2tgpo.data.fakes import fake_trajectories
    from a2tgpo.data.stage import read_manifest, write_stage
    from a2tgpo.data.storage import Storage

    monkeypatch.chdir(tmp_path)
    storage = Storage(StorageConfig(root=str(tmp_path)))
    scored = fake_trajectories(6, tokens=128, schema_name="scored", seed=0)
    write_stage(storage, str(tmp_path / "scored"), scored, "scored")
    result = runner.invoke(app, ["advantages", "--scored", "scored", "--out", "advantaged"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(storage, str(tmp_path / "advantaged"))
    assert manifest.num_rows == scored.num_rows
    assert manifest.parents == [str(tmp_path / "scored")]
    assert "committed" in result.output


def test_long_stage_stats_print_as_valid_json(capsys):
    """A warm-start's stats hold thousands of losses: printing them must not cut the JSON
    text (it used to, and every rerun of `a2tgpo warmstart` then failed to parse it)."""
    from types import SimpleNamespace

    from a2tgpo.cli_common import _done

    stats = {"losses": [0.5] * 5000, "loss_last": 0.1, "nested": {"xs": list(range(40))}}
    _done(SimpleNamespace(uri="/x", num_rows=1, stats=stats))
    out = capsys.readouterr().out
    assert "4988 more" in out and '"loss_last": 0.1' in out
