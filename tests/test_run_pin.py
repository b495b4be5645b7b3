"""A run id holds one experiment: a rerun resumes it, a rerun with other settings is
refused before anything runs (it would mix two experiments' committed stages)."""

from __future__ import annotations

from pathlib import Path

import pytest

from a2tgpo.layout import RunLayout, pin_run_config
from a2tgpo.presets import resolve_config


def test_rerun_with_other_settings_is_refused(tmp_path: Path):
    config = resolve_config("a2tgpo", [f"storage.root={tmp_path}", "run_id=exp"])
    layout = RunLayout.of(config)
    pin_run_config(config, layout)
    assert (tmp_path / "exp" / "run-config.json").is_file()
    pin_run_config(config, layout)  # the same run again: a resume

    longer = resolve_config("a2tgpo", [f"storage.root={tmp_path}", "run_id=exp", "iterations=20"])
    pin_run_config(longer, RunLayout.of(longer))  # running longer is a resume too

    grpo = resolve_config("grpo", [f"storage.root={tmp_path}", "run_id=exp"])
    with pytest.raises(ValueError, match=r"estimator\.name: 'a2tgpo' -> 'grpo'.*new run_id"):
        pin_run_config(grpo, RunLayout.of(grpo))

    other = resolve_config("grpo", [f"storage.root={tmp_path}", "run_id=other"])
    pin_run_config(other, RunLayout.of(other))  # its own run id: fine


def test_a_run_pinned_before_a_setting_existed_resumes(tmp_path: Path):
    import json

    config = resolve_config("embedded", [f"storage.root={tmp_path}", "run_id=old"])
    layout = RunLayout.of(config)
    pin_run_config(config, layout)
    pinned_file = tmp_path / "old" / "run-config.json"
    pinned = json.loads(pinned_file.read_text())
    # as an older version wrote it: without the newer settings, the prefix spelled out
    for newer in ("env.prompt_template", "estimator.grpo_warmup_iterations", "rollout.top_k"):
        del pinned[newer]
    assert pinned["ig.answer_prefix"] == "<answer> "
    pinned_file.write_text(json.dumps(pinned))
    pin_run_config(config, layout)  # newer settings at their defaults: a resume
    changed = resolve_config(
        "embedded", [f"storage.root={tmp_path}", "run_id=old", "env.prompt_template=igpo"]
    )
    with pytest.raises(ValueError, match="prompt_template"):
        pin_run_config(changed, RunLayout.of(changed))


def test_a_numeric_run_id_pins_and_a_clash_is_an_input_error(tmp_path: Path):
    """`--set run_id=123` is the run "123"; a clash is an InputError: one line in the CLI."""
    from a2tgpo.errors import InputError

    config = resolve_config("a2tgpo", [f"storage.root={tmp_path}", "run_id=123"])
    pin_run_config(config, RunLayout.of(config))
    assert (tmp_path / "123" / "run-config.json").is_file()
    grpo = resolve_config("grpo", [f"storage.root={tmp_path}", "run_id=123"])
    with pytest.raises(InputError, match="new run_id"):
        pin_run_config(grpo, RunLayout.of(grpo))
