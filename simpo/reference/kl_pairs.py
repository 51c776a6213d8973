"""KTO's mismatched pairs: the KL term of KTO (Ethayarajh et al., arXiv 2402.01306) is estimated from the policy's
and the reference's log-probs of responses given prompts they do not answer.

The mismatch is fixed by the data, not by the batch (as TRL's KTO data preparation does): pair ``i`` of a split is
scored with the responses of pair ``i + 1`` (the last with the first) under its own prompt. So every pair has the
same two mismatched sequences in every epoch, batch order and layout, and their reference log-probs can be cached
by pair like the matched ones.
"""

from __future__ import annotations

from typing import Any

import datasets
import numpy as np

from data.token_budget import pair_lengths, unlabelled_counts
from simpo.core.logprobs import IGNORE_INDEX
from simpo.errors import UserError
from simpo.reference.keys import pair_key


def prompt_length(labels: list[int]) -> int:
    """Leading unlabelled tokens of a tokenised sequence: its prompt."""
    for index, label in enumerate(labels):
        if label != IGNORE_INDEX:
            return index
    return len(labels)


def mismatched(prompt_ids: list[int], response_ids: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """``prompt_ids + response_ids`` cut to ``max_length`` tokens (at least one response token), and its labels."""
    keep = max(1, max_length - len(prompt_ids))
    response = response_ids[:keep]
    return prompt_ids + response, [IGNORE_INDEX] * len(prompt_ids) + response


def _side_lengths(pairs: datasets.Dataset) -> np.ndarray:
    """(N, 4) int64: chosen and rejected lengths and their prompts' lengths (unlabelled tokens), from Arrow columns."""
    return np.column_stack([pair_lengths(pairs), unlabelled_counts(pairs, "rejected_labels")])


def _keys(pairs: datasets.Dataset) -> list[int]:
    """Each row's pair key (``simpo.reference.keys.pair_key``)."""
    return [pair_key(c, r) for c, r in zip(pairs["chosen_input_ids"], pairs["rejected_input_ids"], strict=True)]


class KLPartners:
    """For each pair of the given splits, the pair whose responses it is scored with (see the module docstring).

    Args:
        splits: the tokenised splits (``chosen_input_ids``, ``chosen_labels``, ``rejected_input_ids``,
            ``rejected_labels``), each of at least 2 pairs.
        max_length: longest mismatched sequence (``data.max_length``).
    """

    def __init__(self, splits: list[datasets.Dataset], max_length: int) -> None:
        self.splits = splits
        self.max_length = max_length
        self._partner: dict[int, tuple[int, int]] = {}  # pair key -> (split, row of its partner)
        self._lengths: list[np.ndarray] | None = None
        self._keys: list[list[int]] = []  # per split, each row's pair key
        for s, split in enumerate(splits):
            if len(split) < 2:
                raise UserError(f"loss=kto needs at least 2 pairs per split for its KL estimate, not {len(split)}")
            keys = _keys(split)
            self._keys.append(keys)
            for row, key in enumerate(keys):
                self._partner.setdefault(key, (s, (row + 1) % len(split)))

    def pseudo_pair_lengths(self, pairs: datasets.Dataset) -> np.ndarray:
        """(N, 3) int64: chosen, rejected and prompt lengths of the pseudo-pair ``kl_pair`` builds for each of
        ``pairs`` (one of the splits given), from the token counts alone (the layout's cost of a batch)."""
        if self._lengths is None:  # (split, row) -> chosen, rejected, chosen prompt, rejected prompt lengths
            self._lengths = [_side_lengths(split) for split in self.splits]
        given = next((s for s, split in enumerate(self.splits) if split is pairs), None)
        own = self._lengths[given] if given is not None else _side_lengths(pairs)
        keys = self._keys[given] if given is not None else _keys(pairs)
        out = np.empty((len(pairs), 3), dtype=np.int64)
        for row, key in enumerate(keys):
            s, partner = self._partner[key]
            chosen, rejected, chosen_prompt, rejected_prompt = self._lengths[s][partner]
            prompt = int(own[row, 2])
            keep = max(1, self.max_length - prompt)  # as ``mismatched`` cuts
            out[row] = (prompt + min(chosen - chosen_prompt, keep), prompt + min(rejected - rejected_prompt, keep),
                        prompt)  # fmt: skip
        return out

    def kl_pair(self, pair: dict[str, Any], key: int) -> dict[str, list[int]]:
        """The mismatched pseudo-pair of ``pair``: its prompt with the partner's chosen and rejected responses."""
        found = self._partner.get(key)
        if found is None:
            raise KeyError("a pair of this batch is in none of the splits the KL partners were built from")
        partner = self.splits[found[0]][found[1]]
        prompt = pair["chosen_input_ids"][: prompt_length(pair["chosen_labels"])]
        out: dict[str, list[int]] = {}
        for side in ("chosen", "rejected"):
            ids = partner[f"{side}_input_ids"]
            response = ids[prompt_length(partner[f"{side}_labels"]) :]
            out[f"{side}_input_ids"], out[f"{side}_labels"] = mismatched(prompt, response, self.max_length)
        return out
