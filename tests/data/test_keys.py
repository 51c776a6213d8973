"""Every data key is checked in ``PreferenceDataModule.__init__``, before any work; messages name the key and value."""

from __future__ import annotations

import re

import pytest

from data.datamodule import PreferenceDataModule

BAD_VALUES = [
    ("batch_size", 0), ("batch_size", -1), ("batch_size", "abc"), ("batch_size", 1.5), ("batch_size", True),
    ("max_length", 0), ("max_length", "512"), ("max_length", 512.0),
    ("max_prompt_length", -3), ("max_prompt_length", None),
    ("truncation_mode", "keep_middle"), ("truncation_mode", None),
    ("num_workers", -1), ("num_workers", 1.5), ("num_workers", "2"),
    ("max_drop_fraction", -0.1), ("max_drop_fraction", 1.5), ("max_drop_fraction", "abc"),
    ("max_drop_fraction", float("nan")),
    ("global_batch_size", 0), ("global_batch_size", 2.5),
    ("pad_to_multiple_of", 0), ("pad_to_multiple_of", "8"),
    ("num_proc", 0), ("num_proc", -2), ("num_proc", 1.5),
    ("val_size", 0), ("val_size", 0.0), ("val_size", -5), ("val_size", 1.5), ("val_size", "abc"),
    ("bos_policy", "ignore"),
    ("seed", -1), ("seed", "abc"),
]  # fmt: skip


@pytest.mark.parametrize(("key", "value"), BAD_VALUES)
def test_a_bad_value_names_the_key_and_the_value(llama3_tokenizer, key, value):
    settings = {"test_split": None, key: value}
    with pytest.raises(ValueError, match=rf"^data\.{key} must be .*{re.escape(repr(value))}"):
        PreferenceDataModule(llama3_tokenizer, "does/not/matter/prefs.jsonl", **settings)


def test_max_prompt_length_must_be_below_max_length(llama3_tokenizer):
    with pytest.raises(ValueError, match=r"data\.max_prompt_length \(256\) .* data\.max_length \(256\)"):
        PreferenceDataModule(llama3_tokenizer, "x", max_length=256, max_prompt_length=256)


@pytest.mark.parametrize(
    "settings",
    [{"global_batch_size": None, "pad_to_multiple_of": None, "num_proc": None},
     {"global_batch_size": 64, "pad_to_multiple_of": 8, "num_proc": 1, "num_workers": 0, "max_drop_fraction": 1},
     {"max_drop_fraction": 0, "val_size": 0.05, "test_split": None},
     {"val_size": 500, "test_split": None}],
)  # fmt: skip
def test_good_values_pass(llama3_tokenizer, settings):
    PreferenceDataModule(llama3_tokenizer, "x", **settings)


def test_columns_must_be_a_mapping(llama3_tokenizer):
    with pytest.raises(ValueError, match=r"data\.columns must map .*\['prompt'\]"):
        PreferenceDataModule(llama3_tokenizer, "x", columns=["prompt"])
