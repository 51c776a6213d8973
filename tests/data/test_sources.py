"""Finding splits: a single file, a directory of split files, a save_to_disk copy; errors that name the fix."""

from __future__ import annotations

import json

import datasets
import pytest

from data.sources import load_split

ROWS = [{"prompt": f"p{i}", "chosen": [], "rejected": []} for i in range(3)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_single_file_is_the_whole_split(tmp_path):
    write_jsonl(tmp_path / "pairs.jsonl", ROWS)
    assert load_split(str(tmp_path / "pairs.jsonl"), "train")["prompt"] == ["p0", "p1", "p2"]


def test_directory_of_split_files(tmp_path):
    write_jsonl(tmp_path / "train_prefs.jsonl", ROWS)
    datasets.Dataset.from_list(ROWS[:1]).to_parquet(str(tmp_path / "test_prefs.parquet"))
    assert len(load_split(str(tmp_path), "train_prefs")) == 3
    assert load_split(str(tmp_path), "test_prefs")["prompt"] == ["p0"]
    with pytest.raises(FileNotFoundError, match=r"train_prefs.jsonl.*set data.train_split / data.test_split"):
        load_split(str(tmp_path), "validation")


def test_save_to_disk_copy(tmp_path):
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "dd"))
    assert len(load_split(str(tmp_path / "dd"), "train")) == 3


def test_missing_local_path_and_unsupported_type(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_split(str(tmp_path / "nope.jsonl"), "train")
    (tmp_path / "pairs.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_split(str(tmp_path / "pairs.csv"), "train")


def test_bundled_data_has_both_splits():
    from train import ROOT

    assert len(load_split(str(ROOT / "data" / "tiny_prefs"), "train_prefs")) == 640
    assert len(load_split(str(ROOT / "data" / "tiny_prefs"), "test_prefs")) == 256
