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

# weights, and pickles (never copied into a checkpoint: a2tgpo loads none)
WEIGHT_FILES = (
    "*.safetensors",
    "model.safetensors.index.json",
    "*.bin",
    "*.pt",
    "*.pth",
    "*.pkl",
    "*.ckpt",
)


def iter_full_parameters(
    module: torch.nn.Module, dtype: torch.dtype | None = None, trainable: bool | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full CPU tensor) for every parameter, or only the trainable (True) or frozen
    (False) ones; collective under ZeRO-3 (all ranks call)."""
    import deepspeed

    for name, param in module.named_parameters():
        if trainable is not None and param.requires_grad != trainable:
            continue
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
    write_hf(iter_full_parameters(module, dtype), source_dir, out_dir, dtype, write, shard_bytes)


def write_hf(
    tensors: Iterator[tuple[str, torch.Tensor]],
    source_dir: str | Path,
    out_dir: str | Path,
    dtype: torch.dtype,
    write: bool,
    shard_bytes: int = 2 << 30,
) -> None:
    """Consume (HF name, tensor) pairs (every rank: they may be gathered collectively) into
    the weight shards of an HF folder, with the source's other files (only where `write`)."""
    out = Path(out_dir)
    writer = ShardWriter(out, "model", shard_bytes) if write else None
    for name, tensor in tensors:
        if writer is not None:
            writer.add(name, tensor)
    if writer is None:
        return
    writer.close()
    copy_model_files(source_dir, out, dtype)


class ShardWriter:
    """Tensors streamed into safetensors shards of about `shard_bytes`, named as HF names
    them: `{stem}.safetensors`, or `{stem}-00001-of-0000N.safetensors` and
    `{stem}.safetensors.index.json`. A shard's tensors are released once it is written."""

    def __init__(self, out: Path, stem: str, shard_bytes: int = 2 << 30):
        self.out, self.stem, self.shard_bytes = out, stem, shard_bytes
        self.pending: dict[str, torch.Tensor] = {}
        self.size = 0
        self.count = 0
        self.shard_of: dict[str, int] = {}  # tensor name -> shard number
        out.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, tensor: torch.Tensor) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if self.size and self.size + nbytes > self.shard_bytes:
            self._flush()
        self.pending[name] = tensor
        self.size += nbytes
        self.shard_of[name] = self.count + 1

    def close(self) -> dict[str, str]:
        """Write the last shard and name them all; returns {tensor name: file name}."""
        self._flush()
        if self.count == 1:
            (self.out / "shard-00001.tmp").rename(self.out / f"{self.stem}.safetensors")
            return {name: f"{self.stem}.safetensors" for name in self.shard_of}
        files = {
            i: f"{self.stem}-{i:05d}-of-{self.count:05d}.safetensors"
            for i in range(1, self.count + 1)
        }
        for i, file in files.items():
            (self.out / f"shard-{i:05d}.tmp").rename(self.out / file)
        weight_map = {name: files[i] for name, i in self.shard_of.items()}
        index = {"metadata": {}, "weight_map": weight_map}
        index_path = self.out / f"{self.stem}.safetensors.index.json"
        index_path.write_text(json.dumps(index, indent=1))
        return weight_map

    def _flush(self) -> None:
        from safetensors.torch import save_file

        if not self.pending and self.count:
            return
        self.count += 1
        save_file(
            {k: v.contiguous() for k, v in self.pending.items()},
            self.out / f"shard-{self.count:05d}.tmp",
            metadata={"format": "pt"},
        )
        self.pending.clear()
        self.size = 0


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
