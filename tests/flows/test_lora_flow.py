"""A LoRA run through the whole flow (`model.lora.rank=8`): Prefect (test harness),
storage on moto's S3 server, vLLM serving base + adapter on CPU, DeepSpeed ZeRO-3
training the adapters; then the run resumed from its adapter checkpoint."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from a2tgpo.config_ops import apply_overrides
from a2tgpo.data.checkpoints import policy_files
from a2tgpo.data.stage import read_manifest
from a2tgpo.layout import RunLayout
from flows.train import train_flow

pytestmark = pytest.mark.slow


def test_a_lora_run_trains_adapters_rolls_out_with_them_and_resumes(prefect_harness, s3_run_config):
    config = apply_overrides(
        s3_run_config,
        [
            *("run_id=lora", "iterations=1", "model.lora.rank=8", "train.learning_rate=1e-2"),
            *("eval.initial=false", "eval.every=0"),
        ],
    )
    layout = RunLayout.of(config)
    base = layout.initial_policy(config)  # the warm-started policy: the adapters' base
    train_flow(config=config)
    first = read_manifest(layout.storage, layout.stage(0, "checkpoint"))
    assert first.stats["lora"]["base_policy"] == base and first.stats["lora"]["rank"] == 8
    parts = {f.path.removeprefix(f"{first.content_root}/").split("/")[0] for f in first.files}
    assert parts == {"adapter", "optim", "stats.json"}  # no full copy of the model
    params = first.stats["parameters"]
    assert 0 < params["trainable"] < params["total"] // 5

    result = train_flow(config=config.model_copy(update={"iterations": 2}))  # resumed
    again = read_manifest(layout.storage, layout.stage(0, "checkpoint"))
    assert again.created_at == first.created_at  # committed before: not redone
    second = read_manifest(layout.storage, layout.stage(1, "checkpoint"))
    assert second.parents == [layout.stage(1, "advantaged"), layout.stage(0, "checkpoint"), base]
    assert policy_files(layout.storage, second.uri).base_uri == base
    rollout = read_manifest(layout.storage, layout.stage(1, "trajectories"))
    assert rollout.parents[-1] == layout.stage(0, "checkpoint")  # rolled out with adapter 1
    for manifest in (first, second):  # vLLM's base + adapter log-probs = the trainer's
        mismatch = manifest.stats["mismatch"]
        assert mismatch and max(v for k, v in mismatch.items() if "abs" in k) < 1e-4
    assert result["policy"] == layout.stage(1, "checkpoint")
    run = MlflowClient(config.tracking.mlflow_uri).get_run(result["mlflow_run_id"])
    assert "a2tgpo.log_model_error" not in run.data.tags  # the merged policy was uploaded
    assert run.data.params["model.lora.rank"] == "8"
