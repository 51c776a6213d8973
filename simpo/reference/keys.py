"""Content keys of tokenised pairs: the cached reference log-probs are looked up by the tokens themselves, so they
hold whatever the batch order, layout, token budget or number of processes, and a changed pair never finds a stale
value."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def sequence_key(*parts: Sequence[int]) -> int:
    """A signed 64-bit digest (BLAKE2b) of one or more token-id lists, kept apart by their lengths."""
    digest = hashlib.blake2b(digest_size=8)
    for ids in parts:
        array = np.asarray(ids, dtype=np.int64)
        digest.update(np.int64(array.size).tobytes())
        digest.update(array.tobytes())
    return int.from_bytes(digest.digest(), "little", signed=True)


def pair_key(chosen_ids: Sequence[int], rejected_ids: Sequence[int]) -> int:
    """The key of a pair: its chosen and rejected token ids (prompt included)."""
    return sequence_key(chosen_ids, rejected_ids)
