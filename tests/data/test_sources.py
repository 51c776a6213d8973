"""Finding splits: a single file, a directory of split files, a save_to_disk copy; errors that name the fix."""

from __future__ import annotations

import json

import datasets
import pytest

from data.sources import is_single_file, load_split

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


# ---- sharded data: a directory of shards or a glob is one split ----

PAIRS = [{"prompt": f"p{i}", "chosen": [], "rejected": []} for i in range(7)]


def write_shards(directory, stem, rows, count, suffix=".jsonl", skip=()):
    directory.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        if k not in skip:
            write_jsonl(directory / f"{stem}-{k:05d}-of-{count:05d}{suffix}", rows[k::count])


def test_a_directory_of_one_set_of_shards_is_one_split_of_every_row(tmp_path):
    write_shards(tmp_path / "shards", "train", PAIRS, 3)
    loaded = load_split(str(tmp_path / "shards"), "train_prefs")  # the split keys do not apply: it is the split
    assert sorted(loaded.rows["prompt"]) == sorted(p["prompt"] for p in PAIRS)
    assert loaded.files == [{"file": "train-00000-of-00003.jsonl", "rows": 3},
                            {"file": "train-00001-of-00003.jsonl", "rows": 2},
                            {"file": "train-00002-of-00003.jsonl", "rows": 2}]  # fmt: skip
    assert is_single_file(str(tmp_path / "shards"))


def test_a_glob_is_one_split_and_matching_nothing_is_named(tmp_path):
    write_shards(tmp_path, "part", PAIRS, 2)
    (tmp_path / "notes.txt").write_text("not data")
    loaded = load_split(str(tmp_path / "part-*.jsonl"), "train")
    assert len(loaded.rows) == 7 and [f["rows"] for f in loaded.files] == [4, 3]
    with pytest.raises(FileNotFoundError, match=r"data.dataset=.*nothing-\*.jsonl matches no file"):
        load_split(str(tmp_path / "nothing-*.jsonl"), "train")
    with pytest.raises(ValueError, match=r"matches 3 files of types \['.jsonl', '.txt'\]"):
        load_split(str(tmp_path / "*.*"), "train")


def test_a_missing_shard_is_refused_never_trained_on_in_part(tmp_path):
    write_shards(tmp_path / "shards", "train", PAIRS, 3, skip=(1,))
    with pytest.raises(FileNotFoundError, match=r"incomplete \(shard numbers missing: \[1\]"):
        load_split(str(tmp_path / "shards"), "train")


def test_the_hubs_layout_of_sharded_splits_under_data(tmp_path):
    """What a hub snapshot holds: data/<split>-0000k-of-0000n-<hash>.parquet, for each split."""
    (tmp_path / "data").mkdir()
    for split, rows, count in (("train_prefs", PAIRS, 2), ("test_prefs", PAIRS[:2], 1)):
        for k in range(count):
            name = f"{split}-{k:05d}-of-{count:05d}-a1b2.parquet"
            datasets.Dataset.from_list(rows[k::count]).to_parquet(str(tmp_path / "data" / name))
    assert not is_single_file(str(tmp_path))
    train = load_split(str(tmp_path), "train_prefs")
    assert len(train.rows) == 7 and [f["rows"] for f in train.files] == [4, 3]
    assert load_split(str(tmp_path), "test_prefs").rows["prompt"] == ["p0", "p1"] and not train.files[2:]


def test_shards_that_disagree_on_column_types_are_named(tmp_path):
    write_jsonl(tmp_path / "train-00000-of-00002.jsonl", [{"prompt": "a", "chosen": [], "rejected": [], "score": 1}])
    write_jsonl(tmp_path / "train-00001-of-00002.jsonl", [{"prompt": "b", "chosen": [], "rejected": [], "score": "x"}])
    with pytest.raises(ValueError, match=r"train-00001-of-00002.jsonl gives the columns \['score'\] other types"):
        load_split(str(tmp_path), "train")


def test_a_split_of_several_files_is_named_as_given_not_by_its_first_shard(tmp_path):
    write_shards(tmp_path / "shards", "train", PAIRS, 2)
    assert load_split(str(tmp_path / "shards"), "train").name == "shards"
    assert load_split(str(tmp_path / "shards" / "train-*.jsonl"), "train").name == "train-*.jsonl"
