"""Find and load the splits of a preference data set (a local file, a local directory, or a hub id); carve a seeded
validation set out of train (``data.val_size``)."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def _split_file(directory: Path, split: str) -> Path | None:
    """The file of ``split`` in a directory of split files (``<split>.jsonl|.json|.parquet``)."""
    matches = [directory / f"{split}{suffix}" for suffix in FILE_BUILDERS]
    found = [path for path in matches if path.is_file()]
    if len(found) > 1:
        raise ValueError(f"{directory} holds several files for split {split!r}: {[p.name for p in found]}")
    return found[0] if found else None


def _load_file(path: Path) -> datasets.Dataset:
    builder = FILE_BUILDERS.get(path.suffix)
    if builder is None:
        raise ValueError(f"data.dataset={path}: unsupported file type; use one of {sorted(FILE_BUILDERS)}")
    return datasets.load_dataset(builder, data_files=str(path), split="train")


def load_split(dataset: str, split: str) -> datasets.Dataset:
    """Load one split of ``dataset``.

    Args:
        dataset: a local file (the whole file is the split), a directory holding ``<split>.jsonl`` /
            ``.json`` / ``.parquet`` files or a ``save_to_disk`` copy, or a Hugging Face hub id.
        split: the split's name (e.g. ``train_prefs``).

    Raises:
        FileNotFoundError: the directory has no file for ``split``; the message lists what it has.
    """
    path = Path(dataset).expanduser()
    if path.is_file():
        return _load_file(path)
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file():
            loaded = datasets.load_from_disk(str(path))
            return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        split_file = _split_file(path, split)
        if split_file is None:
            present = sorted(p.name for p in path.iterdir() if p.suffix in FILE_BUILDERS)
            raise FileNotFoundError(
                f"data.dataset={dataset} has no file for split {split!r} (found: {present}); "
                "set data.train_split / data.test_split to one of them"
            )
        return _load_file(split_file)
    if dataset.startswith((".", "/", "~")):
        raise FileNotFoundError(f"data.dataset={dataset}: no such file or directory")
    return datasets.load_dataset(dataset, split=split)


def validation_count(val_size: float | int, total: int) -> int:
    """Rows to carve for ``data.val_size``: a fraction in (0, 1) of ``total``, or a count.

    Raises:
        ValueError: a size that leaves no validation row or no training row (names ``data.val_size``).
    """
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float)):
        raise ValueError(f"data.val_size must be a fraction in (0, 1) or a row count, not {val_size!r}")
    count = round(val_size * total) if isinstance(val_size, float) and val_size < 1 else int(val_size)
    if not 0 < count < total:
        raise ValueError(
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
