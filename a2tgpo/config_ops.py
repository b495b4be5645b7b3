"""Operations on a config tree: `key.sub=value` overrides and the flat `section.field`
view (MLflow params, the pinned run config). The tree itself is `a2tgpo.config`."""

from __future__ import annotations

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
