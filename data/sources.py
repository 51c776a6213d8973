"""Find and load the splits of a preference data set (a local file, a local directory, or a hub id); carve a seeded
validation set out of train (``data.val_size``).

``data.dataset`` is, in this order: an existing file (a single file has no splits: it is the training split), an
existing directory (``<split>.jsonl|.json|.parquet`` files, or a ``save_to_disk`` copy), a path that does not
exist (anything with a data-file suffix, starting with ``.``, ``/`` or ``~``, or with more than one ``/``: an error
that names the working directory), or else a hub id. Every error names ``data.dataset`` and the cause.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np

from data.file_rows import FILE_TYPES, one_line, read_file
from data.progress import no_progress_bars
from simpo.core.value_checks import is_integer
from simpo.errors import MissingFileError, UserError

PATH_SUFFIXES = (*FILE_TYPES, ".csv", ".tsv", ".txt", ".arrow", ".gz", ".bz2", ".xz", ".zst", ".zip")


@dataclass(frozen=True)
class SplitRows:
    """The rows of one split as read.

    Attributes:
        rows: the rows (malformed lines of a JSON-lines file left out).
        name: the split's name in reports: the split asked for, or the file's name for a single file.
        malformed_lines: 1-based numbers of the lines dropped as ``malformed_json`` (local JSON files only).
        mixed_type_lines: 1-based numbers of the lines dropped as ``mixed_field_type`` (local JSON-lines files only).
    """

    rows: datasets.Dataset
    name: str
    malformed_lines: list[int] = field(default_factory=list)
    mixed_type_lines: list[int] = field(default_factory=list)

    def line_drops(self) -> dict[str, list[int]]:
        """{reason: line numbers} of the lines dropped before encoding (they are no rows)."""
        return {"malformed_json": self.malformed_lines, "mixed_field_type": self.mixed_type_lines}


def is_single_file(dataset: str) -> bool:
    """Whether ``data.dataset`` names an existing file (the training split; it has no other split)."""
    return Path(str(dataset)).expanduser().is_file()


def looks_like_path(dataset: str) -> bool:
    """Whether ``data.dataset`` is clearly a local path rather than a hub id (``name`` or ``org/name``)."""
    return (
        dataset.startswith((".", "/", "~"))
        or "\\" in dataset
        or dataset.count("/") > 1
        or Path(dataset).suffix.lower() in PATH_SUFFIXES
    )


def _split_file(directory: Path, split: str) -> Path | None:
    """The file of ``split`` in a directory of split files (``<split>.jsonl|.json|.parquet``)."""
    matches = [directory / f"{split}{suffix}" for suffix in FILE_TYPES]
    found = [path for path in matches if path.is_file()]
    if len(found) > 1:
        raise UserError(f"{directory} holds several files for split {split!r}: {[p.name for p in found]}")
    return found[0] if found else None


def _missing_path(dataset: str) -> FileNotFoundError:
    path = Path(dataset).expanduser()
    where = "" if path.is_absolute() else f" (relative to the working directory {Path.cwd()})"
    parent = path.parent if path.parent != Path() else Path.cwd()
    nearby = sorted(p.name for p in parent.iterdir() if p.suffix in FILE_TYPES) if parent.is_dir() else []
    hint = f"; data files in {parent}: {nearby[:10]}" if nearby else ""
    return FileNotFoundError(f"data.dataset={dataset}: no such file or directory{where}{hint}")


def _load_hub(dataset: str, split: str) -> datasets.Dataset:
    """A split of a hub data set; an error that names ``data.dataset`` when it cannot be loaded."""
    try:
        return datasets.load_dataset(dataset, split=split)
    except Exception as error:  # datasets raises many types (offline, not found, gated, bad split): say which
        cause = one_line(error)
        if isinstance(error, ValueError) and "split" in str(error).lower():
            raise UserError(
                f"data.dataset={dataset} has no split {split!r} ({cause}): set data.train_split / data.test_split"
            ) from error
        raise UserError(
            f"data.dataset={dataset} is neither a local path (nothing named {dataset!r} in the working directory "
            f"{Path.cwd()}) nor a reachable hub data set: {cause}"
        ) from error


def _load_from_disk(path: Path, dataset: str, split: str) -> datasets.Dataset:
    try:
        with no_progress_bars():
            loaded = datasets.load_from_disk(str(path))
    except Exception as error:  # e.g. a split saved with no rows has no shard, and datasets fails on it
        raise UserError(
            f"data.dataset={dataset} is a save_to_disk copy that cannot be loaded: {one_line(error)}"
        ) from error
    if not isinstance(loaded, datasets.DatasetDict):
        return loaded
    if split not in loaded:
        raise UserError(
            f"data.dataset={dataset} (a save_to_disk copy) has no split {split!r} (it has: {list(loaded)}): set "
            "data.train_split / data.test_split to one of them"
        )
    return loaded[split]


def load_split(dataset: str, split: str) -> SplitRows:
    """Load one split of ``dataset``.

    Args:
        dataset: a local file (the whole file is the training split; ``split`` does not apply), a directory
            holding ``<split>.jsonl`` / ``.json`` / ``.parquet`` files or a ``save_to_disk`` copy, or a hub id.
        split: the split's name (e.g. ``train_prefs``).

    Raises:
        FileNotFoundError: a local path that does not exist, or a directory without a file for ``split`` (the
            message lists what it has).
        ValueError: a split with no rows, a file that cannot be read (``data/file_rows.py``), a hub id that
            cannot be loaded or has no such split.
    """
    dataset = str(dataset)
    path = Path(dataset).expanduser()
    if path.is_file():
        where = f"data.dataset={dataset}, a single file (the training split)"
        read = read_file(path, where)
        return SplitRows(read.rows, path.name, read.malformed_lines, read.mixed_type_lines)
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file():
            rows = _load_from_disk(path, dataset, split)
            return SplitRows(_with_rows(rows, f"split {split!r} of data.dataset={dataset}"), split)
        split_file = _split_file(path, split)
        if split_file is None:
            present = sorted(p.name for p in path.iterdir() if p.suffix in FILE_TYPES)
            raise MissingFileError(
                f"data.dataset={dataset} has no file for split {split!r} (found: {present}); "
                "set data.train_split / data.test_split to one of them"
            )
        read = read_file(split_file, f"split {split!r} of data.dataset={dataset}")
        return SplitRows(read.rows, split, read.malformed_lines, read.mixed_type_lines)
    if looks_like_path(dataset) or os.path.isabs(dataset):
        raise _missing_path(dataset)
    return SplitRows(_with_rows(_load_hub(dataset, split), f"split {split!r} of data.dataset={dataset}"), split)


def _with_rows(rows: datasets.Dataset, where: str) -> datasets.Dataset:
    if len(rows) == 0:
        raise UserError(f"{where} holds no rows: point data.dataset / data.train_split / data.test_split at data")
    return rows


def check_val_size(value: object) -> float | int | None:
    """``data.val_size``: ``None``, a fraction in (0, 1), or a positive row count.

    Raises:
        ValueError: anything else (names ``data.val_size`` and the value).
    """
    if value is None:
        return None
    fraction = isinstance(value, float) and 0 < value < 1
    if not (fraction or (is_integer(value) and value >= 1)):  # type: ignore[operator]
        raise UserError(
            f"data.val_size must be a fraction in (0, 1) (e.g. 0.05) or a positive row count (e.g. 500), not {value!r}"
        )
    return value  # type: ignore[return-value]


def validation_count(val_size: float | int, total: int) -> int:
    """Rows to carve for ``data.val_size`` (see ``check_val_size``) out of ``total``.

    Raises:
        ValueError: a size that is not a fraction or a count, or that leaves no validation row or no training row
            (names ``data.val_size``).
    """
    check_val_size(val_size)
    count = round(val_size * total) if isinstance(val_size, float) else int(val_size)
    if not 0 < count < total:
        raise UserError(
            f"data.val_size={val_size} gives {count} validation rows out of {total}: it must leave at least one "
            "row for validation and one for training"
        )
    return count


def carve_validation(
    rows: datasets.Dataset, val_size: float | int, seed: int
) -> tuple[tuple[datasets.Dataset, list[int]], tuple[datasets.Dataset, list[int]]]:
    """Split ``rows`` into (train, validation), each with the row indices it holds, by a seeded permutation.

    The same rows, ``val_size`` and ``seed`` always give the same split; both parts keep the original order.
    """
    count = validation_count(val_size, len(rows))
    order = np.random.default_rng(seed).permutation(len(rows))
    val_indices = sorted(int(i) for i in order[:count])
    train_indices = sorted(int(i) for i in order[count:])
    return (rows.select(train_indices), train_indices), (rows.select(val_indices), val_indices)
