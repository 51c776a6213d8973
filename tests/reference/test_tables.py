"""Content keys, the stored table (round trip, stale keys refused) and KTO's mismatched partners, on hand values."""

from __future__ import annotations

import pytest
import torch

from simpo.core.logprobs import IGNORE_INDEX
from simpo.reference.keys import pair_key, sequence_key
from simpo.reference.kl_pairs import KLPartners, mismatched
from simpo.reference.table import ReferenceTable, StaleReferenceError


def test_keys_follow_the_tokens_and_their_order():
    assert pair_key([1, 2, 3], [1, 2, 4]) == pair_key([1, 2, 3], [1, 2, 4])  # deterministic (no hash seed)
    assert pair_key([1, 2, 3], [1, 2, 4]) != pair_key([1, 2, 4], [1, 2, 3])  # chosen and rejected swapped
    assert pair_key([1, 2, 3], [1, 2, 4]) != pair_key([1, 2, 3], [1, 2, 4, 5])
    assert sequence_key([1, 2], [3]) != sequence_key([1], [2, 3])  # lengths keep the parts apart


def test_table_round_trip_and_stale_keys(tmp_path):
    table = ReferenceTable.from_rows({7: [-1.0, -2.0, float("nan"), float("nan")], -3: [-5.0, -6.0, -7.0, -8.0]})
    table.save(tmp_path / "t.pt", {"data": "x"})
    loaded, meta = ReferenceTable.load(tmp_path / "t.pt")
    assert meta == {"data": "x"} and len(loaded) == 2
    values = loaded.lookup(torch.tensor([-3, 7]))
    assert values[:, :2].tolist() == [[-5.0, -6.0], [-1.0, -2.0]] and values.dtype == torch.float64
    with pytest.raises(StaleReferenceError, match="built for other data"):
        loaded.lookup(torch.tensor([7, 8]))
    assert not list(tmp_path.glob(".t.pt-*"))  # no temporary file left


def _pair(prompt: list[int], chosen: list[int], rejected: list[int]) -> dict[str, list[int]]:
    ignore = [IGNORE_INDEX] * len(prompt)
    return {"chosen_input_ids": prompt + chosen, "chosen_labels": ignore + chosen,
            "rejected_input_ids": prompt + rejected, "rejected_labels": ignore + rejected}  # fmt: skip


def test_kl_partners_score_each_prompt_with_the_next_pairs_responses():
    import datasets

    pairs = [_pair([1, 10], [20, 21], [30]), _pair([1, 11, 12], [22], [31, 32, 33]), _pair([1, 13], [23], [34])]
    split = datasets.Dataset.from_list(pairs)
    partners = KLPartners([split], max_length=5)
    first = pairs[0]
    kl = partners.kl_pair(first, pair_key(first["chosen_input_ids"], first["rejected_input_ids"]))
    # pair 0's prompt [1, 10] with pair 1's responses [22] and [31, 32, 33]
    assert kl["chosen_input_ids"] == [1, 10, 22] and kl["chosen_labels"] == [IGNORE_INDEX, IGNORE_INDEX, 22]
    assert kl["rejected_input_ids"] == [1, 10, 31, 32, 33]
    last = pairs[2]
    kl = partners.kl_pair(last, pair_key(last["chosen_input_ids"], last["rejected_input_ids"]))
    assert kl["chosen_input_ids"] == [1, 13, 20, 21] and kl["rejected_input_ids"] == [1, 13, 30]  # wraps to pair 0
    assert mismatched([1, 2, 3, 4], [5, 6, 7], max_length=5) == ([1, 2, 3, 4, 5], [IGNORE_INDEX] * 4 + [5])
    assert mismatched([1, 2, 3, 4, 5], [6, 7], max_length=5)[0] == [1, 2, 3, 4, 5, 6]  # at least one response token
    with pytest.raises(ValueError, match="at least 2 pairs"):
        KLPartners([datasets.Dataset.from_list(pairs[:1])], max_length=5)


def test_a_foreign_or_hostile_cache_file_says_to_delete_it(tmp_path):
    import os

    from simpo.errors import CheckpointError, UserError

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(UserError, match=r"list\.pt is not a reference table of this version \(list\)\. Delete the"):
        ReferenceTable.load(tmp_path / "list.pt")
    torch.save({"columns": Payload()}, tmp_path / "hostile.pt")
    with pytest.raises(CheckpointError, match=r"^/.*hostile\.pt: hostile\.pt holds Python objects .* Delete the file"):
        ReferenceTable.load(tmp_path / "hostile.pt")
    assert not (tmp_path / "ran").exists()
