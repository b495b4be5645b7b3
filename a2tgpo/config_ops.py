"""Operations on a config tree: `key.sub=value` overrides, a partial tree merged on top
of a config (a `--config` file, a flow's `config` parameter) and the flat `section.field`
view (MLflow params, the pinned run config). The tree itself is `a2tgpo.config`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from a2tgpo.config import RunConfig
from a2tgpo.config_rules import takes_text


def apply_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply `key.sub=value` overrides; values parse as JSON when they can, else as strings
    (a text field keeps the text as typed: `run_id=123` is the string "123")."""
    import json

    data: dict[str, Any] = config.model_dump()
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"override {key!r}: {part!r} is not a config section")
            node = node[part]
        if parts[-1] not in node:
            raise ValueError(f"override {key!r}: unknown field {parts[-1]!r}")
        if value is not None and not isinstance(value, str) and takes_text(RunConfig, parts):
            value = raw
        node[parts[-1]] = value
    return RunConfig.model_validate(data)


def merged(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `top`'s values on top, section by section (a partial tree is fine)."""
    out = dict(base)
    for key, value in top.items():
        both_sections = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = merged(out[key], value) if both_sections else value
    return out


def merge_config(config: RunConfig, partial: Mapping[str, Any]) -> RunConfig:
    """`config` with a partial tree's values on top: `{"rollout": {"group_size": 16}}`
    changes that one field and keeps the rest of the section (validated like any config;
    an unknown section or field is refused)."""
    return RunConfig.model_validate(merged(config.model_dump(), partial))


def dotted(overrides: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Override mappings as flat dotted keys: `{"rollout": {"group_size": 16}}` is
    `rollout.group_size=16`, never a whole section replaced by its defaults (no config
    field holds a mapping, so a mapping value always means a section)."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, Mapping):
            out |= dotted(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def flatten(config: BaseModel, prefix: str = "") -> dict[str, Any]:
    """The config as flat `section.field` pairs (MLflow params, artifact tables)."""
    out: dict[str, Any] = {}
    for name, value in config:
        key = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            out.update(flatten(value, key + "."))
        else:
            out[key] = value
    return out
