"""A collator wrapper that gives every batch its pairs' content keys (``pair_keys``) and, for KTO, appends the
mismatched pseudo-pairs of ``kl_pairs.py`` (``num_kl_pairs`` of them, after the real pairs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import datasets
import numpy as np
import torch

from simpo.reference.keys import pair_key
from simpo.reference.kl_pairs import KLPartners


class ReferenceCollator:
    """Wrap a ``PreferenceCollator``.

    Args:
        inner: the layout's collator.
        partners: KTO's mismatched partners, or ``None``.

    Returns (from ``__call__``) the inner batch of the P real pairs followed by K = P (KTO) or 0 pseudo-pairs, with
    ``num_pairs`` = P + K, plus ``pair_keys`` (P,) int64 and ``num_kl_pairs`` = K.
    """

    def __init__(self, inner: Callable[[list[dict[str, Any]]], dict[str, Any]], partners: KLPartners | None) -> None:
        self.inner = inner
        self.partners = partners

    def __getattr__(self, name: str) -> Any:  # layout, pad_token_id, ... of the wrapped collator
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def added_pair_lengths(self, pairs: datasets.Dataset) -> np.ndarray | None:
        """(N, 3) chosen, rejected and prompt lengths of the pseudo-pair each of ``pairs`` brings into a batch (KTO),
        or ``None``: what ``data.max_tokens_per_batch`` must count besides the pairs themselves."""
        return self.partners.pseudo_pair_lengths(pairs) if self.partners else None

    def __call__(self, pairs: list[dict[str, Any]]) -> dict[str, Any]:
        keys = [pair_key(p["chosen_input_ids"], p["rejected_input_ids"]) for p in pairs]
        extra = [self.partners.kl_pair(p, k) for p, k in zip(pairs, keys, strict=True)] if self.partners else []
        batch = self.inner(pairs + extra)
        batch["pair_keys"] = torch.tensor(keys, dtype=torch.long)
        batch["num_kl_pairs"] = len(extra)
        return batch
