"""Deterministic seed derivation.

Every sampled continuation gets a seed derived from the user's seed and *where it sits in the
search* (question text, strategy-specific node path, continuation index), never from its
position in a batch. So ``solve(q, seed=s)`` gives the same result alone or inside
``solve_batch``, and DVTS subtrees cannot influence one another.
"""
from __future__ import annotations

import hashlib

_MASK63 = (1 << 63) - 1


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple of ints and strings (blake2b of their repr)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _MASK63
