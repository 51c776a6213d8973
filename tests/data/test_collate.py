"""Batching: chosen rows then rejected rows, right padding, the scored tokens, no empty responses."""

from __future__ import annotations

import pytest
import torch

from data.collate import PreferenceCollator

PAIRS = [
    {"chosen_input_ids": [1, 2, 3], "chosen_labels": [-100, 2, 3], "rejected_input_ids": [1, 4],
     "rejected_labels": [-100, 4]},
    {"chosen_input_ids": [1, 5, 6, 7, 8], "chosen_labels": [-100, -100, 6, 7, 8], "rejected_input_ids": [1, 9],
     "rejected_labels": [-100, 9]},
]  # fmt: skip


def test_stacks_chosen_then_rejected_and_pads_right():
    batch = PreferenceCollator(pad_token_id=0)(PAIRS)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 0, 0], [1, 5, 6, 7, 8], [1, 4, 0, 0, 0], [1, 9, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 0, 0, 0]]
    # scored tokens: position t of the flattened (4 x 5) batch predicts token t + 1 of its row
    assert batch["target_index"].tolist() == [0, 1, 6, 7, 8, 10, 15]
    assert batch["target_ids"].tolist() == [2, 3, 6, 7, 8, 4, 9]
    assert batch["target_sequence"].tolist() == [0, 0, 1, 1, 1, 2, 3]  # chosen 0, chosen 1, rejected 0, rejected 1
    assert batch["num_pairs"] == 2 and batch["num_tokens"] == 3 + 2 + 5 + 2
    assert all(t.dtype == torch.long for t in batch.values() if isinstance(t, torch.Tensor))
    assert "segment_ids" not in batch  # padded rows need no layout mask


def test_pad_to_multiple_of():
    batch = PreferenceCollator(pad_token_id=7, pad_to_multiple_of=4)(PAIRS)
    assert batch["input_ids"].shape == (4, 8)
    assert batch["input_ids"][0, 3:].tolist() == [7] * 5


def test_a_response_without_labels_never_reaches_the_loss():
    bad = [{**PAIRS[0], "rejected_labels": [-100, -100]}]
    with pytest.raises(ValueError, match="no response tokens"):
        PreferenceCollator(pad_token_id=0)(bad)
