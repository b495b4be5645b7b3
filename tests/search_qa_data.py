"""Where the shipped search-QA benchmark files are, for the tests that read them.

The files lie beside the checkout (../shared), not in it: the project may not
redistribute them. A checkout without them skips those tests; the first candidate is
the checkout's own neighbour, the second where this workplace keeps them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_CANDIDATES = [
    Path(__file__).resolve().parents[2] / "shared" / "data" / "search-qa",
    Path("/work/shared/data/search-qa"),
]
SEARCH_QA = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0])
needs_data = pytest.mark.skipif(not SEARCH_QA.is_dir(), reason="../shared/data/search-qa absent")
