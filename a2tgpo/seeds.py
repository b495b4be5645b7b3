"""Seeds: one stable rule, so the flow, the CLI and a rerun draw the same samples.

Every random choice of a run (which prompts an iteration takes, each trajectory's
sampling seed, the held-out sample) is seeded by `derive_seed` from named parts, never
from a global generator, so a stage rerun alone reproduces its committed output.
"""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any parts (same on every machine and Python run)."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def numpy_seed(*parts: object) -> int:
    """`derive_seed` cut to 32 bits, as numpy's legacy seeding and samplers want it."""
    return derive_seed(*parts) % (1 << 32)
