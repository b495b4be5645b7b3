"""The optimizer state carried from one train step to the next, without pickles.

DeepSpeed's own checkpoint (`engine.save_checkpoint`) is a set of torch pickles that
`engine.load_checkpoint` opens with `torch.load(weights_only=False)`: a checkpoint that
storage could have changed would run code as the training user. This module writes the
AdamW state instead as plain tensors, gathered per parameter (full shapes, so any world
size and ZeRO stage can load it), into safetensors, with the scalars in JSON:

    optim/state.json                    format, step, tensor keys, {tensor: file}
    optim/optimizer*.safetensors        {param}.exp_avg, {param}.exp_avg_sq, and
                                        {param}.master (fp32 master weights) when the
                                        model trains in bf16 / fp16

Loading reads only those two kinds of file (JSON and safetensors parse data, never
code) into a freshly built engine. Saving and loading are collective under ZeRO-3
(every rank calls them, in the same parameter order).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from a2tgpo.training.export import ShardWriter

FORMAT = "a2tgpo-adamw-state/1"
STATE_JSON = "state.json"
MASTER = "master"  # the fp32 master copy of a low-precision parameter


class OptimizerStateError(ValueError):
    """The optimizer state on disk does not fit the engine being restored."""


def save_optimizer_state(engine, out_dir: str | Path, *, write: bool) -> None:
    """Write the engine's AdamW state to `out_dir` (only where `write`; all ranks call)."""
    base, holders = _optimizer_and_state_holders(engine)
    step, keys = _step_and_keys(base, holders)
    with_master = _trains_in_low_precision(engine)
    writer = ShardWriter(Path(out_dir), "optimizer") if write else None
    for name, param in trainable_parameters(engine):
        for key in (*keys, *([MASTER] if with_master else [])):
            tensor = _full_state(base, param, key)  # collective: every rank gathers
            if writer is not None:
                writer.add(f"{name}.{key}", tensor.to("cpu", torch.float32, copy=True))
    if writer is None:
        return
    files = writer.close()
    meta = {"format": FORMAT, "step": step, "keys": keys, "master": with_master, "files": files}
    (Path(out_dir) / STATE_JSON).write_text(json.dumps(meta, indent=1))


def load_optimizer_state(engine, state_dir: str | Path) -> int:
    """Restore the state written by `save_optimizer_state` into a fresh engine (all ranks
    call); returns the optimizer step it resumes from."""
    from safetensors import safe_open

    folder = Path(state_dir)
    meta = _read_meta(folder)
    base, holders = _optimizer_and_state_holders(engine)
    _initialize_state(base, holders, meta["step"], meta["keys"])
    # ZeRO-1/2 and the bf16 optimizer link each parameter to its slice of the state after
    # their first step; the state exists now, so link it (a no-op once linked, and absent
    # from ZeRO-3, which looks the state up on every call)
    link = getattr(engine.optimizer, "_lazy_init_hp_params_optimizer_state", None)
    if link is not None:
        link()
    names = dict(trainable_parameters(engine))
    wanted = {f"{n}.{k}" for n in names for k in meta["keys"] + ([MASTER] * meta["master"])}
    if wanted != set(meta["files"]):
        differ = sorted(wanted ^ set(meta["files"]))
        raise OptimizerStateError(f"{folder}: optimizer state does not fit the model: {differ[:5]}")
    handles = {
        f: safe_open(str(folder / f), "pt", device="cpu") for f in set(meta["files"].values())
    }
    for name, param in names.items():
        for key in meta["keys"] + ([MASTER] if meta["master"] else []):
            tensor = handles[meta["files"][f"{name}.{key}"]].get_tensor(f"{name}.{key}")
            _set_full_state(base, param, key, tensor)
    return meta["step"]


def trainable_parameters(engine) -> list[tuple[str, torch.nn.Parameter]]:
    """The parameters AdamW updates: all of them, or the adapters of a LoRA policy (the
    frozen base has no optimizer state)."""
    return [(n, p) for n, p in engine.module.named_parameters() if p.requires_grad]


def _read_meta(folder: Path) -> dict:
    path = folder / STATE_JSON
    if not path.is_file():
        raise OptimizerStateError(f"{folder}: no {STATE_JSON} (not an a2tgpo optimizer state)")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise OptimizerStateError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    for file in set(meta["files"].values()):
        if Path(file).name != file or not file.endswith(".safetensors"):
            raise OptimizerStateError(f"{path}: {file!r} is not a safetensors file of the folder")
    return meta


def _optimizer_and_state_holders(engine) -> tuple[torch.optim.Optimizer, list[torch.Tensor]]:
    """The torch optimizer under DeepSpeed's wrapper and the tensors its state is keyed by:
    ZeRO-3's flat fp32 partitions (kept out of param_groups between steps), ZeRO-1/2's
    and the bf16 optimizer's flat partitions, or the parameters themselves (stage 0)."""
    wrapper = engine.optimizer
    base = getattr(wrapper, "optimizer", wrapper)
    if hasattr(wrapper, "fp32_partitioned_groups_flat"):
        return base, list(wrapper.fp32_partitioned_groups_flat)
    return base, [p for group in base.param_groups for p in group["params"]]


def _step_and_keys(base, holders) -> tuple[int, list[str]]:
    states = [base.state[h] for h in holders if base.state.get(h)]
    if not states:
        raise OptimizerStateError("the optimizer has taken no step: no state to save")
    steps = {int(s["step"]) for s in states}
    if len(steps) != 1:  # every group steps together in this trainer
        raise OptimizerStateError(f"optimizer groups disagree on the step count: {sorted(steps)}")
    keys = sorted(k for k, v in states[0].items() if k != "step" and torch.is_tensor(v))
    return steps.pop(), keys


def _initialize_state(base, holders, step: int, keys: list[str]) -> None:
    """The state torch's AdamW would create on its first step (zeros), at `step`; the
    values are then written per parameter. Same types as torch's own: a float scalar
    tensor for the step, tensors like the parameter for the moments."""
    scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    for holder in holders:
        state = base.state[holder]
        state["step"] = torch.tensor(float(step), dtype=scalar)
        for key in keys:
            state[key] = torch.zeros_like(holder, memory_format=torch.preserve_format)


def _trains_in_low_precision(engine) -> bool:
    return next(engine.module.parameters()).dtype in (torch.bfloat16, torch.float16)


def _full_state(base, param, key: str) -> torch.Tensor:
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    if _partitioned(param):  # full shape, gathered from every rank's partition
        if key == MASTER:
            return safe_get_full_fp32_param(param)
        return safe_get_full_optimizer_state(param, key)
    return param.detach() if key == MASTER else base.state[param][key]  # stage 0, fp32


def _set_full_state(base, param, key: str, value: torch.Tensor) -> None:
    from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

    shape = tuple(param.ds_shape if hasattr(param, "ds_id") else param.shape)
    if tuple(value.shape) != shape:
        raise OptimizerStateError(
            f"{key} of a parameter has shape {tuple(value.shape)}, not {shape}"
        )
    if _partitioned(param):
        device = _state_device(base)
        if key == MASTER:
            safe_set_full_fp32_param(param, value.to(device))
        else:
            safe_set_full_optimizer_state(param, value.to(device), key)
    elif key != MASTER:
        base.state[param][key].copy_(value)


def _partitioned(param) -> bool:
    """Managed by a DeepSpeed ZeRO / bf16 optimizer (its state is reached through it)."""
    return hasattr(param, "ds_id") or hasattr(param, "_hp_mapping")


def _state_device(base) -> torch.device:
    state = next(iter(base.state.values()))
    return next(v for k, v in state.items() if k != "step").device
