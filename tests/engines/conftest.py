"""Fixtures of the engines suite (the tiny model and the engines are in tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["hf", pytest.param("vllm", marks=pytest.mark.slow)])
def engine(request: pytest.FixtureRequest):
    """Each engine in turn, for the tests of the shared contract."""
    return request.getfixturevalue(f"{request.param}_engine")
