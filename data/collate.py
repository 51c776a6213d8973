"""Collate tokenised pairs into one (2B, T) batch: the B chosen rows first, then the B rejected rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from simpo.logprobs import IGNORE_INDEX


@dataclass
class PreferenceCollator:
    """Right-pad chosen and rejected sequences of a list of pairs to the batch's longest row.

    Args:
        pad_token_id: id written on padding positions (masked out, so any valid id works).
        pad_to_multiple_of: round the padded length up to a multiple of this (``None``: no rounding).

    Returns (from ``__call__``):
        ``input_ids`` (2B, T) long, ``attention_mask`` (2B, T) long, ``labels`` (2B, T) long with
        ``IGNORE_INDEX`` on prompt and padding positions. Rows ``[:B]`` are chosen, ``[B:]`` rejected.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, pairs: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = [p["chosen_input_ids"] for p in pairs] + [p["rejected_input_ids"] for p in pairs]
        labels = [p["chosen_labels"] for p in pairs] + [p["rejected_labels"] for p in pairs]
        for row, row_labels in enumerate(labels):
            if all(label == IGNORE_INDEX for label in row_labels):
                raise ValueError(
                    f"batch row {row} has no response tokens: such a pair must be dropped before batching "
                    "(its length-normalised log-prob would be 0/0)"
                )
        width = max(len(row) for row in ids)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(ids), width), self.pad_token_id, dtype=torch.long)
        label_tensor = torch.full((len(ids), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, (row_ids, row_labels) in enumerate(zip(ids, labels, strict=True)):
            input_ids[row, : len(row_ids)] = torch.tensor(row_ids)
            label_tensor[row, : len(row_labels)] = torch.tensor(row_labels)
            attention_mask[row, : len(row_ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": label_tensor}
