"""Find and load the splits of a preference data set (a local file, a local directory, or a hub id); carve a seeded
validation set out of train (``data.val_size``).

``data.dataset`` is, in this order: an existing file, or a glob of files (``/data/train-*.jsonl``), or a directory
whose data files are the shards of one set (``train-00000-of-00003.jsonl`` ...): one split, with no others (the
training split); an existing directory of splits (``<split>.jsonl|.json|.parquet``, or the shards of a split,
``<split>-00000-of-00002.parquet`` ..., directly or under ``data/`` as the hub lays them out, or a ``save_to_disk``
copy); a path that does not exist (anything with a data-file suffix, starting with ``.``, ``/`` or ``~``, or with more
than one ``/``: an error that names the working directory), or else a hub id. A split read from several files holds
all of their rows in file-name order; a set of shards with one missing is refused, naming it. Every error names
``data.dataset`` and the cause.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
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
            For a split read from several files, ``"<file name>:<line>"``.
        files: for a split read from several files, ``{"file": name, "rows": rows read}`` per file, in order.
    """

    rows: datasets.Dataset
    name: str
    malformed_lines: list[int | str] = field(default_factory=list)
    mixed_type_lines: list[int | str] = field(default_factory=list)
    files: list[dict[str, str | int]] = field(default_factory=list)

    def line_drops(self) -> dict[str, list[int | str]]:
        """{reason: line numbers} of the lines dropped before encoding (they are no rows)."""
        return {"malformed_json": self.malformed_lines, "mixed_field_type": self.mixed_type_lines}


SHARD = re.compile(r"^(?P<stem>.+?)-(?P<index>\d+)-of-(?P<count>\d+)(?:-[^.]*)?(?P<suffix>\.[^.]+)$")
GLOB_CHARACTERS = frozenset("*?[")


def is_single_file(dataset: str) -> bool:
    """Whether ``data.dataset`` is one split with no others (the training split): an existing file, a glob, or a
    directory whose data files are the shards of one set."""
    return _single_split_files(str(dataset)) is not None


def _data_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in FILE_TYPES)


def _single_split_files(dataset: str) -> list[Path] | None:
    """The files of a one-split source (see the module docstring), or ``None`` for any other source.

    Raises:
        UserError: a glob that matches no data file, or files of several types.
    """
    path = Path(dataset).expanduser()
    if path.is_file():
        return [path]
    if GLOB_CHARACTERS & set(dataset) and not path.exists():
        found = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
        if not found:
            raise MissingFileError(f"data.dataset={dataset} matches no file (relative to {Path.cwd()})")
        suffixes = sorted({p.suffix.lower() for p in found})
        if len(suffixes) > 1 or suffixes[0] not in FILE_TYPES:
            raise UserError(
                f"data.dataset={dataset} matches {len(found)} files of types {suffixes}: a glob must match "
                f"{' or '.join(FILE_TYPES)} files of one type"
            )
        return found
    if path.is_dir():
        files = _data_files(path)
        shards = [SHARD.match(p.name) for p in files]
        if files and all(shards) and len({m["stem"] for m in shards if m}) == 1:
            return _complete_shards(files, dataset)
    return None


def _complete_shards(files: list[Path], dataset: str) -> list[Path]:
    """``files``, the shards of one set, checked to be all of them (``-00000-of-00003`` ... ``-00002-of-00003``).

    Raises:
        MissingFileError: a shard is missing, or the files disagree on how many there are.
    """
    matches = [SHARD.match(p.name) for p in files]
    counts = {int(m["count"]) for m in matches if m}
    indices = {int(m["index"]) for m in matches if m}
    if len(counts) == 1 and indices == set(range(counts.pop())):
        return files
    expected = max(int(m["count"]) for m in matches if m)
    missing = sorted(set(range(expected)) - indices)
    raise MissingFileError(
        f"data.dataset={dataset}: the shards {files[0].name} ... are incomplete (shard numbers missing: "
        f"{missing[:10] or 'none'}; shard counts named: {sorted({int(m['count']) for m in matches if m})}): training "
        "on part of a data set silently is not allowed. Complete the download, or point at the files to use"
    )


def looks_like_path(dataset: str) -> bool:
    """Whether ``data.dataset`` is clearly a local path rather than a hub id (``name`` or ``org/name``)."""
    return (
        dataset.startswith((".", "/", "~"))
        or "\\" in dataset
        or dataset.count("/") > 1
        or Path(dataset).suffix.lower() in PATH_SUFFIXES
    )


def _split_files(directory: Path, split: str, dataset: str) -> list[Path]:
    """The files of ``split`` in a directory of splits: ``<split>.jsonl|.json|.parquet``, or the shards
    ``<split>-NNNNN-of-NNNNN*.<type>`` (all of them), there or under ``data/`` (the hub's layout); ``[]``: none."""
    for where in (directory, directory / "data"):
        if not where.is_dir():
            continue
        files = _data_files(where)
        whole = [p for p in files if p.stem == split]
        shards = [p for p in files if (m := SHARD.match(p.name)) and m["stem"] == split]
        if len(whole) > 1 or (whole and shards) or len({p.suffix.lower() for p in shards}) > 1:
            raise UserError(
                f"data.dataset={dataset}: {where} holds several files for split {split!r} "
                f"({[p.name for p in whole + shards][:6]}): keep one file, or one set of shards of one type"
            )
        if whole or shards:
            return whole or _complete_shards(shards, dataset)
    return []


def _read_files(files: list[Path], where: str, name: str) -> SplitRows:
    """The rows of ``files`` in order, as one split named ``name`` (per-file row counts when several)."""
    if len(files) == 1:
        read = read_file(files[0], where)
        return SplitRows(read.rows, name, read.malformed_lines, read.mixed_type_lines)
    parts = [read_file(path, f"{where} (file {path.name})") for path in files]
    first = parts[0].rows.features
    for path, part in zip(files, parts, strict=True):
        if part.rows.features != first:
            other = part.rows.features
            differ = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
            raise UserError(
                f"{where}: {path.name} gives the columns {differ} other types (or names) than {files[0].name}: the "
                "files of one split must share their columns and types"
            )
    with no_progress_bars():
        rows = datasets.concatenate_datasets([part.rows for part in parts])
    contents = "|".join(part.rows._fingerprint for part in parts)  # each a hash of its file's bytes
    rows._fingerprint = f"files-{hashlib.sha256(contents.encode()).hexdigest()[:40]}"
    return SplitRows(
        rows,
        name,
        [f"{path.name}:{line}" for path, part in zip(files, parts, strict=True) for line in part.malformed_lines],
        [f"{path.name}:{line}" for path, part in zip(files, parts, strict=True) for line in part.mixed_type_lines],
        [{"file": path.name, "rows": len(part.rows)} for path, part in zip(files, parts, strict=True)],
    )


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
    single = _single_split_files(dataset)
    if single is not None:
        kind = "a single file" if path.is_file() else f"{len(single)} files"  # named as given: file, glob, directory
        return _read_files(single, f"data.dataset={dataset}, {kind} (the training split)", path.name)
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file():
            rows = _load_from_disk(path, dataset, split)
            return SplitRows(_with_rows(rows, f"split {split!r} of data.dataset={dataset}"), split)
        files = _split_files(path, split, dataset)
        if not files:
            present = [p.name for where in (path, path / "data") if where.is_dir() for p in _data_files(where)]
            raise MissingFileError(
                f"data.dataset={dataset} has no file for split {split!r} (found: {present[:10]}); "
                "set data.train_split / data.test_split to one of them"
            )
        return _read_files(files, f"split {split!r} of data.dataset={dataset}", split)
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
