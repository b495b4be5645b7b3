"""Generation engines and the project's tiny model.

`make_engine("vllm" | "hf", model_dir, ...)` returns an `Engine`: batched generation
with stop strings and per-request seeds (`generate`), and teacher-forced scoring
(`prompt_logprobs`). `build_tiny_model` writes the random-init policy the pipeline
starts from when no model folder is given. vLLM and transformers are imported only
when an engine is made, so importing this package is cheap.
"""

from a2tgpo.engines.base import Engine, Generation, SamplingSpec
from a2tgpo.engines.factory import make_engine
from a2tgpo.engines.tiny_model import AGENT_TAGS, SPECIAL_TOKENS, build_tiny_model

__all__ = [
    "AGENT_TAGS",
    "SPECIAL_TOKENS",
    "Engine",
    "Generation",
    "SamplingSpec",
    "build_tiny_model",
    "make_engine",
]
