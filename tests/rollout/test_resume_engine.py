"""A resumed run starts no engine for a stage that is already committed (issue 13 item
15): the session starts its engine lazily, inside the stage, after the resume check."""

from __future__ import annotations

import pytest

from a2tgpo.data.fakes import fake_prompts
from a2tgpo.rollout.session import EngineSession
from a2tgpo.stages.rollout import run_rollout
from tests.rollout.test_trajectories import _config, _rollout


def test_a_committed_rollout_starts_no_engine(tmp_path, tokenizer, tiny_model_dir, monkeypatch):
    config = _config(tmp_path)
    storage, out = _rollout(
        config, tokenizer, tiny_model_dir, fake_prompts(2), ["<answer> x</answer>"]
    )

    def no_engine(*args, **kwargs):
        raise AssertionError("an engine was started for a committed stage")

    monkeypatch.setattr("a2tgpo.engines.make_engine", no_engine)
    with EngineSession(config) as session:  # a fresh session, as a rerun has
        manifest = run_rollout(
            config,
            prompts_uri=storage.join("prompts"),
            policy_uri=str(tiny_model_dir),
            out_uri=out,
            policy_version=0,
            seed=0,
            session=session,
        )
        assert session.engine is None
    assert manifest.num_rows == 4
    with pytest.raises(AssertionError, match="engine was started"):
        EngineSession(config).engine_for(str(tiny_model_dir))  # the patch does bite
