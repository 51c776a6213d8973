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
    assert load_split(str(tmp_path / "pairs.jsonl"), "train").rows["prompt"] == ["p0", "p1", "p2"]


def test_directory_of_split_files(tmp_path):
    write_jsonl(tmp_path / "train_prefs.jsonl", ROWS)
    datasets.Dataset.from_list(ROWS[:1]).to_parquet(str(tmp_path / "test_prefs.parquet"))
    assert len(load_split(str(tmp_path), "train_prefs").rows) == 3
    assert load_split(str(tmp_path), "test_prefs").rows["prompt"] == ["p0"]
    with pytest.raises(FileNotFoundError, match=r"train_prefs.jsonl.*set data.train_split / data.test_split"):
        load_split(str(tmp_path), "validation")


def test_save_to_disk_copy(tmp_path):
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "dd"))
    assert len(load_split(str(tmp_path / "dd"), "train").rows) == 3


def test_missing_local_path_and_unsupported_type(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_split(str(tmp_path / "nope.jsonl"), "train")
    (tmp_path / "pairs.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_split(str(tmp_path / "pairs.csv"), "train")


def test_bundled_data_has_both_splits():
    from train import ROOT

    assert len(load_split(str(ROOT / "data" / "tiny_prefs"), "train_prefs").rows) == 640
    assert len(load_split(str(ROOT / "data" / "tiny_prefs"), "test_prefs").rows) == 256


@pytest.mark.parametrize(
    "dataset", ["prefs.jsonl", "./x.jsonl", "mydata/prefs.jsonl", "./mydata", "a/b/c", "p.parquet"]
)
def test_a_missing_relative_path_is_not_taken_for_a_hub_id(tmp_path, monkeypatch, dataset):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("asked the hub"))
    with pytest.raises(FileNotFoundError) as caught:
        load_split(dataset, "train")
    assert str(caught.value).startswith(
        f"data.dataset={dataset}: no such file or directory (relative to the working directory {tmp_path})"
    )


def test_a_missing_path_lists_the_data_files_next_to_it(tmp_path):
    write_jsonl(tmp_path / "prefs.jsonl", ROWS)
    with pytest.raises(FileNotFoundError, match=r"no such file or directory; data files in .*\['prefs.jsonl'\]"):
        load_split(str(tmp_path / "pref.jsonl"), "train")


def test_an_unreachable_hub_id_says_it_is_neither_a_path_nor_a_hub_data_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # as on a machine without network
    with pytest.raises(ValueError) as caught:
        load_split("someorg/no-such-prefs", "train_prefs")
    message = str(caught.value)
    assert message.startswith(
        f"data.dataset=someorg/no-such-prefs is neither a local path (nothing named 'someorg/no-such-prefs' in the "
        f"working directory {tmp_path}) nor a reachable hub data set: ConnectionError: "
    )
    assert "\n" not in message


def test_a_hub_data_set_without_the_split_names_the_split_keys(monkeypatch):
    def unknown_split(*args, **kwargs):
        raise ValueError("Unknown split \"validation\". Should be one of ['train_prefs', 'test_prefs'].")

    monkeypatch.setattr(datasets, "load_dataset", unknown_split)
    with pytest.raises(ValueError, match=r"data\.dataset=org/prefs has no split 'validation' .*data\.train_split"):
        load_split("org/prefs", "validation")


def test_save_to_disk_copy_without_the_split_or_unreadable(tmp_path):
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ValueError, match=r"has no split 'validation' \(it has: \['train'\]\)"):
        load_split(str(tmp_path / "dd"), "validation")
    splits = {"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS).select([])}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "empty"))  # no shard for "test": datasets cannot load it
    with pytest.raises(ValueError, match=rf"data\.dataset={tmp_path / 'empty'} is a save_to_disk copy that cannot be"):
        load_split(str(tmp_path / "empty"), "train")
