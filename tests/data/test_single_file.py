"""A single data file just works: it is the training split whatever the split keys say; validation is a seeded
carve-out (data.val_size) or none, said in one log line; ``has_validation`` is right before setup."""

from __future__ import annotations

import json
import logging

import datasets
import pytest

from data.datamodule import PreferenceDataModule
from tests.data.conftest import uf_row, write_split

ROWS = [uf_row(prompt=f"Question number {i}?", chosen=f"Answer {i}.") for i in range(40)]
SETTINGS = {"max_length": 256, "max_prompt_length": 128}


def write_file(path, rows=ROWS):
    """``rows`` as a .jsonl, .json (array) or .parquet file, by ``path``'s suffix."""
    if path.suffix == ".parquet":
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def single_file_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "is a single file" in r.getMessage()]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_a_single_file_trains_without_validation_whatever_the_split_keys_say(
    llama3_tokenizer, tmp_path, isolated_cache, caplog, suffix
):
    path = write_file(tmp_path / f"prefs{suffix}")
    module = PreferenceDataModule(llama3_tokenizer, str(path), train_split="nope", test_split="test_prefs", **SETTINGS)
    assert module.has_validation is False
    with caplog.at_level(logging.INFO, logger="data.datamodule"):
        module.setup()
    assert list(module.splits) == ["train"] and len(module.splits["train"]) == 40
    assert module.val_dataloader() == []
    assert single_file_lines(caplog) == [
        f"data.dataset={path} is a single file: training on it; no validation (set data.val_size=0.05 to carve one)"
    ]
    assert module.report["validation"] == "none" and module.report["splits"]["train"]["split"] == path.name


def test_val_size_carves_validation_out_of_a_single_file_even_with_a_test_split_set(
    llama3_tokenizer, tmp_path, isolated_cache, caplog
):
    path = write_file(tmp_path / "prefs.jsonl")
    module = PreferenceDataModule(llama3_tokenizer, str(path), val_size=0.25, seed=3, **SETTINGS)  # test_split default
    assert module.test_split == "test_prefs" and module.has_validation is True
    with caplog.at_level(logging.INFO, logger="data.datamodule"):
        module.setup()
    train, val = module.splits["train"], module.splits["val"]
    assert (len(train), len(val)) == (30, 10)
    decode = lambda pairs: {llama3_tokenizer.decode(p["chosen_input_ids"]) for p in pairs}  # noqa: E731
    assert not decode(train) & decode(val)  # never validate on training rows
    assert single_file_lines(caplog) == [
        f"data.dataset={path} is a single file: training on it; validating on a seeded carve-out of 10 rows "
        "(data.val_size=0.25, seed=3; training never sees them)"
    ]
    assert module.report["validation"] == "val_size"
    again = PreferenceDataModule(llama3_tokenizer, str(path), val_size=0.25, seed=3, **SETTINGS)
    again.setup("validate")
    assert again.splits["val"][:] == val[:]


def test_has_validation_is_known_after_init(llama3_tokenizer, tmp_path):
    path = write_file(tmp_path / "prefs.jsonl")
    write_split(tmp_path / "d", "train_prefs", ROWS)

    def has_validation(dataset, **settings):
        return PreferenceDataModule(llama3_tokenizer, str(dataset), **settings).has_validation

    assert has_validation(path) is False
    assert has_validation(path, val_size=5) is True
    assert has_validation(path, test_split=None, val_size=5) is True
    assert has_validation(tmp_path / "d") is True  # test_prefs
    assert has_validation(tmp_path / "d", test_split=None) is False
    assert has_validation(tmp_path / "d", test_split=None, val_size=0.1) is True
    assert has_validation("org/hub-prefs", test_split="test") is True


def test_a_directory_or_hub_data_set_still_refuses_val_size_with_a_test_split(llama3_tokenizer, tmp_path):
    write_split(tmp_path / "d", "train_prefs", ROWS)
    for dataset in (str(tmp_path / "d"), "org/hub-prefs"):
        with pytest.raises(ValueError, match=r"data\.val_size=0\.05 carves .* data\.test_split=null \(it is 'test'\)"):
            PreferenceDataModule(llama3_tokenizer, dataset, test_split="test", val_size=0.05)


def test_the_test_split_cannot_be_the_training_split(llama3_tokenizer, tmp_path):
    write_split(tmp_path / "d", "train", ROWS)
    with pytest.raises(ValueError, match=r"data\.test_split='train' is also data\.train_split, so validation would"):
        PreferenceDataModule(llama3_tokenizer, str(tmp_path / "d"), train_split="train", test_split="train")


def test_evaluation_can_validate_on_a_whole_file_but_never_on_a_carved_files_training_rows(
    llama3_tokenizer, tmp_path, isolated_cache, caplog
):
    path = write_file(tmp_path / "heldout.jsonl")
    module = PreferenceDataModule(llama3_tokenizer, str(path), whole_file_validation=True, **SETTINGS)
    assert module.has_validation is True
    with caplog.at_level(logging.INFO, logger="data.datamodule"):
        module.setup("validate")
    assert list(module.splits) == ["val"] and len(module.splits["val"]) == 40
    assert single_file_lines(caplog) == [
        f"data.dataset={path} is a single file: validating on all 40 rows of it (whole_file_validation; no "
        "training split)"
    ]
    with pytest.raises(ValueError, match=r"no training split: data\.dataset=.* is a single file validated on whole"):
        module.train_dataloader()
    carved = PreferenceDataModule(llama3_tokenizer, str(path), whole_file_validation=True, val_size=10, **SETTINGS)
    carved.setup("validate")
    trained = PreferenceDataModule(llama3_tokenizer, str(path), val_size=10, **SETTINGS)
    trained.setup()
    assert carved.splits["val"][:] == trained.splits["val"][:]  # the rows the training run validated on


def test_a_directory_of_shards_trains_on_every_shard_and_reports_each(
    llama3_tokenizer, tmp_path, isolated_cache, caplog
):
    shards = tmp_path / "shards"
    shards.mkdir()
    for k in range(3):  # the hub's naming: train-0000k-of-00003.jsonl
        write_file(shards / f"train-{k:05d}-of-00003.jsonl", ROWS[k::3])
    module = PreferenceDataModule(llama3_tokenizer, str(shards), val_size=4, test_split=None, **SETTINGS)
    with caplog.at_level(logging.INFO, logger="data.datamodule"):
        module.setup()
    assert len(module.splits["train"]) + len(module.splits["val"]) == 40  # every row, not one shard's third
    train = module.report["splits"]["train"]
    assert train["files"] == [{"file": f"train-{k:05d}-of-00003.jsonl", "rows": n} for k, n in enumerate((14, 13, 13))]
    assert f"data.dataset={shards} is one split of 3 files: training on it; validating on a seeded carve-out" in \
        caplog.text
    glob = PreferenceDataModule(llama3_tokenizer, str(shards / "train-*.jsonl"), **SETTINGS)
    glob.setup()
    assert len(glob.splits["train"]) == 40 and glob.report["splits"]["train"]["files"] == train["files"]
