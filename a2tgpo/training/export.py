"""Writing the policy out of a (ZeRO-3 partitioned) engine, one parameter at a time.

`iter_full_parameters` gathers each parameter alone (ZeRO-3's GatheredParameters on
one tensor), so the whole model never has to fit in one rank's memory: gathering
everything at once is the known OOM of weight sync in TRL and OpenRLHF. The HF
export writes those tensors into safetensors shards as they come; the in-place vLLM
reload consumes the same iterator in buckets.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch

WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "model.safetensors.index.json")


def iter_full_parameters(
    module: torch.nn.Module, dtype: torch.dtype | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full CPU tensor) for every parameter; collective under ZeRO-3 (all ranks call)."""
    import deepspeed

    for name, param in module.named_parameters():
        if hasattr(param, "ds_id"):  # partitioned by ZeRO-3: gather this one tensor only
            with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                tensor = param.data.detach().to("cpu", dtype=dtype or param.dtype, copy=True)
        else:
            tensor = param.detach().to("cpu", dtype=dtype or param.dtype, copy=True)
        yield name, tensor


def export_hf(
    module: torch.nn.Module,
    source_dir: str | Path,
    out_dir: str | Path,
    *,
    dtype: torch.dtype,
    write: bool,
    shard_bytes: int = 2 << 30,
) -> None:
    """Write an HF model folder: streamed weight shards + the source's config and tokenizer.

    Every rank must call this (gathering is collective); only `write=True` writes.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    names: list[tuple[str, int]] = []  # (parameter, shard index)
    if write:
        out.mkdir(parents=True, exist_ok=True)
    for name, tensor in iter_full_parameters(module, dtype):
        if not write:
            continue
        if size and size + tensor.numel() * tensor.element_size() > shard_bytes:
            _save_shard(save_file, shards[-1], out, len(shards))
            shards.append({})  # the written shard's tensors are released here
            size = 0
        shards[-1][name] = tensor
        size += tensor.numel() * tensor.element_size()
        names.append((name, len(shards)))
    if not write:
        return
    _save_shard(save_file, shards[-1], out, len(shards))
    _name_shards(out, len(shards), names)
    copy_model_files(source_dir, out, dtype)


def _save_shard(save_file, tensors: dict[str, torch.Tensor], out: Path, number: int) -> None:
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        out / f"shard-{number:05d}.tmp",
        metadata={"format": "pt"},
    )
    tensors.clear()


def _name_shards(out: Path, count: int, names: list[tuple[str, int]]) -> None:
    if count == 1:
        (out / "shard-00001.tmp").rename(out / "model.safetensors")
        return
    files = {i: f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)}
    for i, file in files.items():
        (out / f"shard-{i:05d}.tmp").rename(out / file)
    index = {"metadata": {}, "weight_map": {name: files[i] for name, i in names}}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))


def copy_model_files(source_dir: str | Path, out: Path, dtype: torch.dtype) -> None:
    """Config, generation config, tokenizer and chat template: everything but the weights."""
    source = Path(source_dir)
    for path in source.iterdir():
        if path.is_file() and not any(path.match(p) for p in WEIGHT_FILES):
            shutil.copy2(path, out / path.name)
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    config["dtype"] = str(dtype).removeprefix("torch.")
    config.pop("torch_dtype", None)
    config_path.write_text(json.dumps(config, indent=2))
