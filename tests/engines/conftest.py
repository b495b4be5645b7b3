"""Shared fixtures of the engines suite: one tiny model and one engine of each kind.

The vLLM engine starts once per session (~30 s on CPU: an engine-core child process
and a warm-up) and is shut down explicitly at session end.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before vllm is first imported: its INFO logs would drown pytest's output.
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

CORPUS_LINES = [
    "<think>I need the mother of Alice Smith.</think> <search>Alice Smith mother</search>",
    "<information>Doc 1: Alice Smith was born in Paris. Her mother is Carol Jones.</information>",
    "<think>Carol Jones is the mother, so that is the answer.</think> <answer>Carol Jones</answer>",
    "Question: where was the father of Bob Brown born? Answer with the name of a city.",
    "<search>Bob Brown father</search> <information>Bob Brown's father is Dan Brown.</information>",
    "The quick brown fox jumps over the lazy dog; numbers 12345 and unicode: Zürich, 東京.",
]
MAX_MODEL_LEN = 512


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return CORPUS_LINES * 20


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, corpus: list[str]) -> Path:
    from a2tgpo.engines import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", corpus, seed=0)


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def chat_prompts(tokenizer) -> list[list[int]]:
    """A few ChatML prompts ending in the assistant header, as token ids."""
    questions = ["Who is the mother of Alice Smith?", "Where was Bob born?", "Name a city."]
    text = [
        tokenizer.apply_chat_template(
            [{"role": "system", "content": "Search, then answer."}, {"role": "user", "content": q}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for q in questions
    ]
    return [tokenizer.encode(t) for t in text]


@pytest.fixture(scope="session")
def hf_engine(tiny_model_dir: Path):
    from a2tgpo.engines import make_engine

    with make_engine("hf", tiny_model_dir, dtype="float32", max_model_len=MAX_MODEL_LEN) as engine:
        yield engine


@pytest.fixture(scope="session")
def vllm_engine(tiny_model_dir: Path):
    pytest.importorskip("vllm")
    from a2tgpo.engines import make_engine

    engine = make_engine(
        "vllm", tiny_model_dir, dtype="float32", max_model_len=MAX_MODEL_LEN, kv_cache_gib=0.5
    )
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture(params=["hf", pytest.param("vllm", marks=pytest.mark.slow)])
def engine(request: pytest.FixtureRequest):
    """Each engine in turn, for the tests of the shared contract."""
    return request.getfixturevalue(f"{request.param}_engine")
