"""Flow parameters shared by the training and evaluation flows, typed for Prefect's form."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import WithJsonSchema

from a2tgpo.config import RunConfig
from a2tgpo.presets import PRESETS

# The preset parameter's choices: every name in PRESETS (a new preset joins the list)
PresetName = Literal[tuple(PRESETS)]  # type: ignore[valid-type]
# `config`: a partial tree in Prefect's form (a JSON object, merged on top of the preset;
# RunConfig's own schema would show every default and replace the preset's values); a
# whole RunConfig from Python (the CLI, the sweep, tests) is taken as it is.
PartialConfig = Annotated[
    dict[str, Any] | RunConfig | None,
    WithJsonSchema(
        {
            "anyOf": [{"type": "object", "additionalProperties": True}, {"type": "null"}],
            "examples": [{"rollout": {"group_size": 16}, "train": {"learning_rate": 1e-5}}],
        }
    ),
]
