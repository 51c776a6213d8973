"""Collate tokenised pairs into one batch in a ``data.layout``: padded rows, packed rows, or one shared prompt per pair.

Every layout gives the forward pass the same description of what to score: ``target_index`` (M,) positions in the
flattened (R * T) batch whose hidden state predicts ``target_ids`` (M,), a token of response ``target_sequence`` (M,)
(chosen of pair i = i, rejected of pair i = P + i). Layouts differ in how the tokens are laid out:

- ``padded``: 2P rows (chosen rows first, then rejected), right-padded to the longest; a 2-D ``attention_mask``.
- ``packed``: the 2P sequences laid end to end in as few rows as fit ``pack_length`` tokens (first fit, longest
  first); ``position_ids`` restart at 0 for each sequence and attention stays inside it.
- ``shared_prompt``: one row per pair, ``[prompt, chosen response, rejected response]``: the prompt is computed once;
  rejected tokens attend to the prompt and to themselves, never to the chosen response, and their positions continue
  from the prompt's end (as if the chosen response were not there). The prompt's last hidden state predicts both
  responses' first tokens.
- ``shared_prompt_packed``: several such pair rows packed into one row.

The non-padded layouts describe attention with ``segment_ids`` (R, T) (a sequence or pair within its row, -1 on
padding) and ``branch_ids`` (R, T) (0: seen by the whole segment, 1: chosen, 2: rejected); the forward pass turns
them, with ``position_ids``, into the attention mask of its kernel (``simpo/core/attention_masks.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from simpo.core.logprobs import IGNORE_INDEX
from simpo.errors import UserError

LAYOUTS = ("padded", "packed", "shared_prompt", "shared_prompt_packed")
AUTO = "auto"  # data.layout=auto: choose_layout picks one of LAYOUTS


def choose_layout(requested: str, device: str, attn_implementation: str, resumed: str | None = None) -> tuple[str, str]:
    """The batch layout to use for ``data.layout=requested`` and why (``data_report.json`` and the log say it).

    ``auto`` takes a resumed checkpoint's layout (``resumed``: its ``data.layout``; ``padded`` for a checkpoint
    older than the key), so a run resumes as it started; else ``padded`` with ``flash_attention_2`` (which takes no
    shared-prompt masks) and on CUDA (no GPU measurement shows a shared-prompt layout ahead there yet), and
    ``shared_prompt_packed`` on CPU, where it is measured fastest (``benchmarks/RESULTS.md``: the prompt computed once
    per pair, no padding, and with ``sdpa_segments`` attention that costs each pair's own length). Every layout
    gives the same results (``tests/simpo/test_layouts_exact.py``).

    Args:
        requested: ``data.layout``.
        device: ``cpu`` or ``cuda`` (where training runs).
        attn_implementation: ``model.attn_implementation``.
        resumed: the layout of the checkpoint resumed from, or ``None`` for a fresh run.
    """
    if requested != AUTO:
        return requested, "data.layout"
    if resumed is not None:
        return resumed, "data.layout=auto: the resumed checkpoint's layout"
    if attn_implementation == "flash_attention_2":
        return "padded", "data.layout=auto: model.attn_implementation=flash_attention_2 takes no shared-prompt masks"
    if device == "cuda":
        return "padded", "data.layout=auto: on CUDA until a GPU measurement shows another layout faster"
    return "shared_prompt_packed", ("data.layout=auto: on CPU the fastest measured (each pair's prompt run once, the "
                                    "pairs packed without padding, attention per pair: sdpa_segments)")


@dataclass
class _Unit:
    """One packable piece: a sequence (``packed``) or a pair row (shared layouts), with what it scores.

    ``targets`` holds (offset of the predicting token within the unit, target id, response index).
    """

    ids: list[int]
    positions: list[int]
    branches: list[int]
    targets: list[tuple[int, int, int]] = field(default_factory=list)


def _prompt_length(labels: list[int]) -> int:
    """Leading unlabelled tokens: the prompt."""
    for index, label in enumerate(labels):
        if label != IGNORE_INDEX:
            return index
    return len(labels)


def _sequence_unit(ids: list[int], labels: list[int], response: int) -> _Unit:
    """A whole prompt + response sequence; token t >= 1 with a label is predicted by token t - 1."""
    targets = [(t - 1, ids[t], response) for t in range(1, len(ids)) if labels[t] != IGNORE_INDEX]
    return _Unit(list(ids), list(range(len(ids))), [0] * len(ids), targets)


def _shared_prompt_unit(pair: dict[str, Any], index: int, n_pairs: int) -> _Unit:
    """``[prompt, chosen response, rejected response]`` of one pair (see the module docstring)."""
    chosen, rejected = pair["chosen_input_ids"], pair["rejected_input_ids"]
    p = _prompt_length(pair["chosen_labels"])
    if _prompt_length(pair["rejected_labels"]) != p or chosen[:p] != rejected[:p]:
        raise UserError(f"pair {index}: chosen and rejected do not share their prompt tokens; use data.layout=padded")
    if p == 0:
        raise UserError(f"pair {index} has no prompt token to share; use data.layout=padded")
    c, r = chosen[p:], rejected[p:]
    ids = chosen[:p] + c + r
    positions = list(range(p + len(c))) + list(range(p, p + len(r)))
    branches = [0] * p + [1] * len(c) + [2] * len(r)
    targets = [(p - 1 + j, token, index) for j, token in enumerate(c)]
    targets += [(p - 1 if j == 0 else p + len(c) + j - 1, token, n_pairs + index) for j, token in enumerate(r)]
    return _Unit(ids, positions, branches, targets)


def first_fit(lengths: list[int], capacity: int) -> list[list[int]]:
    """Rows of unit indices: units longest first (ties in order), each into the first row with room; a unit longer
    than ``capacity`` gets a row of its own."""
    rows: list[list[int]] = []
    room: list[int] = []
    for unit in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for row, left in enumerate(room):
            if lengths[unit] <= left:
                rows[row].append(unit)
                room[row] -= lengths[unit]
                break
        else:
            rows.append([unit])
            room.append(capacity - lengths[unit])
    return rows


@dataclass
class PreferenceCollator:
    """Batch a list of tokenised pairs in ``layout`` (see the module docstring).

    Args:
        pad_token_id: id written on padding positions (never attended to nor scored, so any valid id works).
        pad_to_multiple_of: round the row length up to a multiple of this (``None``: no rounding).
        layout: ``padded`` | ``packed`` | ``shared_prompt`` | ``shared_prompt_packed``.
        pack_length: tokens per packed row (packed layouts); a longer sequence or pair gets a row of its own.

    Returns (from ``__call__``), with R rows of T tokens, P pairs and M scored tokens:
        ``input_ids``, ``position_ids``, ``attention_mask`` (1 on real tokens) (R, T) long; ``target_index``,
        ``target_ids``, ``target_sequence`` (M,) long; ``num_pairs`` int; ``num_tokens`` int (the pairs' chosen +
        rejected sequence lengths, the same whatever the layout: the tokens a layout stands for); ``sequence_lengths``
        list of 2P ints (each chosen sequence's length, then each rejected one's: what the MFU counts); and, except for
        ``padded``, ``segment_ids`` and ``branch_ids`` (R, T) long.

    Raises:
        ValueError: a response without a scored token (its length-normalised log-prob would be 0/0), or, in the
            shared layouts, a pair whose chosen and rejected sequences do not start with the same prompt.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    layout: str = "padded"
    pack_length: int = 1024

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise UserError(f"data.layout must be one of {list(LAYOUTS)}, not {self.layout!r}")

    def unit_lengths(self, pairs: list[dict[str, Any]]) -> list[int]:
        """The lengths of the units ``pairs`` become in this layout, in the collator's order, from the token ids
        alone: 2P sequences (chosen first) or, in the shared layouts, P pair rows of ``chosen + rejected - prompt``
        tokens (the prompt, counted by the leading unlabelled tokens, once)."""
        if self.layout.startswith("shared_prompt"):
            return [
                len(p["chosen_input_ids"]) + len(p["rejected_input_ids"]) - _prompt_length(p["chosen_labels"])
                for p in pairs
            ]
        return [len(p["chosen_input_ids"]) for p in pairs] + [len(p["rejected_input_ids"]) for p in pairs]

    def added_pair_lengths(self, pairs: Any) -> None:
        """The lengths of pairs this collator adds to a batch for each of ``pairs`` (a split): none (``None``); a
        wrapper that adds some (``simpo.reference.collate.ReferenceCollator``) returns their (N, 3) lengths, which the
        token budget counts."""
        return None

    def laid_out_shape(self, lengths: list[int]) -> tuple[int, int]:
        """(R, T): the rows and row length (padding included) of a batch whose units have ``lengths``; R x T is the
        number of token positions the forward pass computes."""
        rows = self._rows(lengths)
        return len(rows), self._width(max(sum(lengths[i] for i in row) for row in rows))

    def _rows(self, lengths: list[int]) -> list[list[int]]:
        if self.layout in ("padded", "shared_prompt"):
            return [[i] for i in range(len(lengths))]
        return first_fit(lengths, self.pack_length)

    def _width(self, longest_row: int) -> int:
        multiple = self.pad_to_multiple_of
        return -(-longest_row // multiple) * multiple if multiple else longest_row

    def _units(self, pairs: list[dict[str, Any]]) -> list[_Unit]:
        n = len(pairs)
        if self.layout.startswith("shared_prompt"):
            return [_shared_prompt_unit(pair, i, n) for i, pair in enumerate(pairs)]
        sides = [(p["chosen_input_ids"], p["chosen_labels"]) for p in pairs]
        sides += [(p["rejected_input_ids"], p["rejected_labels"]) for p in pairs]
        return [_sequence_unit(ids, labels, k) for k, (ids, labels) in enumerate(sides)]

    def __call__(self, pairs: list[dict[str, Any]]) -> dict[str, Any]:
        units = self._units(pairs)
        rows = [[units[i] for i in row] for row in self._rows([len(u.ids) for u in units])]
        width = self._width(max(sum(len(u.ids) for u in row) for row in rows))
        shape = (len(rows), width)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        position_ids = torch.zeros(shape, dtype=torch.long)
        segment_ids = torch.full(shape, -1, dtype=torch.long)
        branch_ids = torch.zeros(shape, dtype=torch.long)
        targets: list[tuple[int, int, int]] = []
        for r, row in enumerate(rows):
            start = 0
            for segment, unit in enumerate(row):
                end = start + len(unit.ids)
                input_ids[r, start:end] = torch.tensor(unit.ids)
                position_ids[r, start:end] = torch.tensor(unit.positions)
                segment_ids[r, start:end] = segment
                branch_ids[r, start:end] = torch.tensor(unit.branches)
                targets += [(r * width + start + offset, token, response) for offset, token, response in unit.targets]
                start = end
        target = torch.tensor(targets, dtype=torch.long).reshape(-1, 3)
        scored = torch.bincount(target[:, 2], minlength=2 * len(pairs))  # scored tokens per response
        if bool((scored == 0).any()):
            row = int((scored == 0).nonzero()[0])
            raise ValueError(
                f"batch response {row} has no response tokens: such a pair must be dropped before batching "
                "(its length-normalised log-prob would be 0/0)"
            )
        lengths = [len(p["chosen_input_ids"]) for p in pairs] + [len(p["rejected_input_ids"]) for p in pairs]
        batch: dict[str, Any] = {
            "input_ids": input_ids,
            "position_ids": position_ids,
            "attention_mask": (segment_ids >= 0).long(),
            "target_index": target[:, 0].contiguous(),
            "target_ids": target[:, 1].contiguous(),
            "target_sequence": target[:, 2].contiguous(),
            "num_pairs": len(pairs),
            "num_tokens": sum(lengths),
            "sequence_lengths": lengths,
        }
        if self.layout != "padded":
            batch["segment_ids"], batch["branch_ids"] = segment_ids, branch_ids
        return batch
