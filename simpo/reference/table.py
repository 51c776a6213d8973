"""The reference log-prob table: per pair key, the reference's summed log-probs of the chosen and rejected responses
(and, for KTO, of the two mismatched sequences of ``kl_pairs.py``), stored atomically under a fingerprint of what they
depend on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from simpo.errors import UserError
from simpo.io import read_torch_file, save_torch

COLUMNS = ("chosen", "rejected", "kl_chosen", "kl_rejected")


class StaleReferenceError(UserError, LookupError):
    """A pair of the batch has no value in the reference table: the table belongs to other data (a ``LookupError``
    too, for callers that catch one)."""


@dataclass
class ReferenceTable:
    """Reference log-prob sums by pair key.

    Attributes:
        keys: (N,) int64 pair keys (``keys.pair_key``), unique.
        values: (N, 4) float64: chosen, rejected, KL-chosen and KL-rejected log-prob sums (NaN where not computed).
    """

    keys: torch.Tensor
    values: torch.Tensor

    def __post_init__(self) -> None:
        self._index = {int(key): row for row, key in enumerate(self.keys.tolist())}

    def __len__(self) -> int:
        return len(self._index)

    def lookup(self, keys: torch.Tensor) -> torch.Tensor:
        """(P, 4) float64 values of the pairs ``keys`` (P,).

        Raises:
            StaleReferenceError: a key is missing.
        """
        rows = []
        for key in keys.tolist():
            row = self._index.get(int(key))
            if row is None:
                raise StaleReferenceError(
                    f"a pair of this batch has no cached reference log-prob (key {int(key)}): the cache was built for "
                    "other data; it is never used for pairs it does not cover (delete it under $SIMPO_CACHE/reference/ "
                    "to compute it again)"
                )
            rows.append(row)
        return self.values[torch.tensor(rows, dtype=torch.long)]

    @classmethod
    def from_rows(cls, rows: dict[int, list[float]]) -> ReferenceTable:
        """A table from ``{key: [chosen, rejected, kl_chosen, kl_rejected]}``."""
        keys = torch.tensor(sorted(rows), dtype=torch.long)
        values = torch.tensor([rows[k] for k in keys.tolist()], dtype=torch.float64).reshape(-1, len(COLUMNS))
        return cls(keys, values)

    def save(self, path: Path, meta: dict) -> None:
        """Write the table (and ``meta``, what it was computed from) to ``path`` atomically."""
        save_torch({"keys": self.keys, "values": self.values, "columns": list(COLUMNS), "meta": meta}, path)

    @classmethod
    def load(cls, path: Path) -> tuple[ReferenceTable, dict]:
        """The table stored at ``path`` and its ``meta``.

        Raises:
            CheckpointError: the file is truncated or holds more than plain data (``simpo.io.read_torch_file``).
        """
        remedy = "Delete the file: the reference log-probs are computed again"
        stored = read_torch_file(path, "", remedy=remedy)
        if not isinstance(stored, dict) or stored.get("columns") != list(COLUMNS) or "meta" not in stored:
            found = stored.get("columns") if isinstance(stored, dict) else type(stored).__name__
            raise UserError(f"{path} is not a reference table of this version ({found}). {remedy}")
        return cls(stored["keys"], stored["values"]), stored["meta"]


def tables_with_meta(directory: Path, meta: dict, besides: Path) -> list[Path]:
    """The tables in ``directory`` other than ``besides`` computed from the same ``meta`` (data, reference, dtype):
    a table's name also hashes the code that computed it, so these were written by another version of that code.
    Files that cannot be read as tables are passed over."""
    found = []
    for path in sorted(directory.glob("*.pt")):
        if path == besides:
            continue
        try:
            _, stored = ReferenceTable.load(path)
        except (UserError, OSError):
            continue
        if stored == meta:
            found.append(path)
    return found
