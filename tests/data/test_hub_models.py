"""A policy named by a Hugging Face hub id (`owner/name`) resolves to its snapshot in the
HF cache; the hub is unreachable here, so the cache is filled beforehand and
huggingface_hub runs offline (HF_HUB_OFFLINE=1), in a subprocess (it reads its settings
at import)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REVISION = "0123456789abcdef0123456789abcdef01234567"
SCRIPT = """
import json, sys
from a2tgpo.config import StorageConfig
from a2tgpo.data.checkpoints import policy_files
from a2tgpo.data.storage import Storage
storage = Storage(StorageConfig(root=sys.argv[1]))
out = {}
for uri in sys.argv[2:]:
    try:
        files = policy_files(storage, uri)
        out[uri] = [str(files.model_dir), str(files.adapter_dir), files.base_uri]
    except FileNotFoundError as error:
        out[uri] = str(error)
print(json.dumps(out))
"""


def cached_model(cache: Path, repo: str, source: Path) -> Path:
    """`source` as huggingface_hub's cache keeps a downloaded snapshot of `repo`."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(REVISION)
    shutil.copytree(source, root / "snapshots" / REVISION)
    return root / "snapshots" / REVISION


def test_hub_ids_resolve_to_their_cached_snapshot_also_as_an_adapter_base(tmp_path, tiny_model_dir):
    snapshot = cached_model(tmp_path / "hub", "acme/tiny-policy", tiny_model_dir)
    adapter = tmp_path / "my-adapter" / "adapter"  # a user's LoRA on the hub model
    adapter.mkdir(parents=True)
    config = {"peft_type": "LORA", "r": 4, "base_model_name_or_path": "acme/tiny-policy"}
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin"}
    bare = tmp_path / "peft-folder"  # as peft's save_pretrained writes it
    shutil.copytree(adapter, bare)
    uris = ["acme/tiny-policy", str(adapter.parent), str(bare), "acme/missing"]
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "store"), *uris],
        capture_output=True, text=True, env=env, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["acme/tiny-policy"] == [str(snapshot), "None", None]
    assert out[str(adapter.parent)] == [str(snapshot), str(adapter), "acme/tiny-policy"]
    assert out[str(bare)] == [str(snapshot), str(bare), "acme/tiny-policy"]
    assert "Hugging Face hub could not provide it" in out["acme/missing"]
