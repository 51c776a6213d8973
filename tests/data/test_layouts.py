"""Layouts (UltraFeedback, TRL, plain strings), column mapping, and every bad-row reason."""

from __future__ import annotations

import datasets
import pytest

from data.layouts import BAD_ROW_REASONS, BadRowError, detect_layout, resolve_columns, row_to_turns
from data.pair_encoding import TruncationSettings, encode_pair
from tests.data.conftest import uf_row

USER = {"role": "user", "content": "What is a cat?"}
GOOD = {"role": "assistant", "content": "A small pet."}
BAD = {"role": "assistant", "content": "No."}
TRL = {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]}
STRINGS = {"prompt": "What is a cat?", "chosen": "A small pet.", "rejected": "No."}


@pytest.mark.parametrize(("row", "layout"), [(uf_row(), "ultrafeedback"), (TRL, "trl"), (STRINGS, "strings")])
def test_layout_is_detected_and_every_layout_gives_the_same_ids(tokenizer, row, layout):
    assert detect_layout(datasets.Dataset.from_list([row]), {f: f for f in row}) == layout
    assert row_to_turns(row, layout) == ([USER], GOOD, BAD)
    reference = encode_pair(uf_row(), tokenizer, TruncationSettings(), layout="ultrafeedback")
    assert encode_pair(row, tokenizer, TruncationSettings(), layout=layout) == reference


def test_ultrafeedback_without_prompt_column_and_multi_turn():
    turns = [USER, {"role": "assistant", "content": "Pets?"}, {"role": "user", "content": "Yes."}]
    row = {"chosen": [*turns, GOOD], "rejected": [*turns, BAD]}
    assert (
        detect_layout(datasets.Dataset.from_list([row]), {"chosen": "chosen", "rejected": "rejected"})
        == "ultrafeedback"
    )
    assert row_to_turns(row, "ultrafeedback") == (turns, GOOD, BAD)


def test_strings_with_a_message_list_prompt():
    row = {**STRINGS, "prompt": [{"role": "system", "content": "Be brief."}, USER]}
    assert row_to_turns(row, "strings")[0] == row["prompt"]


def test_column_mapping_and_its_errors():
    names = ["question", "good", "bad", "id"]
    mapping = {"prompt": "question", "chosen": "good", "rejected": "bad"}
    assert resolve_columns(names, mapping) == mapping
    with pytest.raises(ValueError, match=r"no column 'chosen'.*data\.columns"):
        resolve_columns(names, None)
    with pytest.raises(ValueError, match=r"no column 'answer'.*data\.columns"):
        resolve_columns(names, {**mapping, "chosen": "answer"})
    with pytest.raises(ValueError, match=r"data\.columns maps \['response'\]"):
        resolve_columns(names, {"response": "good"})


def test_undecidable_layout_names_data_columns():
    rows = datasets.Dataset.from_list([{"prompt": "p", "chosen": [GOOD], "rejected": "text"}])
    with pytest.raises(ValueError, match=r"cannot tell the layout.*data\.columns"):
        detect_layout(rows, {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"})
    nulls = datasets.Dataset.from_list([{"prompt": "p", "chosen": None, "rejected": [GOOD]}])
    with pytest.raises(ValueError, match=r"chosen=chosen \(null in the first 100 rows\)"):
        detect_layout(nulls, {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"})


def _replace_chosen_last(content):
    def change(row):
        row["chosen"][-1] = {"role": "assistant", "content": content}

    return change


CASES = [
    ("ultrafeedback", lambda r: r.pop("chosen"), "missing_field"),
    ("ultrafeedback", lambda r: r.update(rejected=None), "missing_field"),
    ("trl", lambda r: r.update(prompt=None), "missing_field"),
    ("strings", lambda r: r.pop("prompt"), "missing_field"),
    ("ultrafeedback", lambda r: r.update(rejected="text"), "not_message_list"),
    ("ultrafeedback", lambda r: r.update(chosen=[]), "not_message_list"),
    ("trl", lambda r: r.update(prompt=["hi"]), "not_message_list"),
    ("ultrafeedback", lambda r: r["chosen"].insert(0, {"role": "robot", "content": "x"}), "unknown_role"),
    ("ultrafeedback", lambda r: r["chosen"].append({"role": "user", "content": "x"}), "last_turn_not_assistant"),
    ("ultrafeedback", _replace_chosen_last(42), "non_string_content"),
    ("strings", lambda r: r.update(chosen=["a list"]), "non_string_content"),
    ("ultrafeedback", lambda r: r["rejected"][-1].update(content="  "), "blank_content"),
    ("strings", lambda r: r.update(prompt=" "), "blank_content"),
    (
        "ultrafeedback",
        lambda r: r.update(chosen=r["chosen"][1:], rejected=r["rejected"][1:], prompt=None),
        "empty_prompt",
    ),
    ("trl", lambda r: r.update(prompt=[{"role": "system", "content": "x"}]), "empty_prompt"),
    ("ultrafeedback", lambda r: r["rejected"].__setitem__(0, {"role": "user", "content": "Other?"}), "prompts_differ"),
    ("ultrafeedback", _replace_chosen_last("No. "), "chosen_equals_rejected"),
    ("strings", lambda r: r.update(rejected="A small pet."), "chosen_equals_rejected"),
]


@pytest.mark.parametrize(("layout", "change", "reason"), CASES)
def test_bad_rows_name_their_reason(tokenizer, layout, change, reason):
    import copy

    row = copy.deepcopy({"ultrafeedback": uf_row(), "trl": TRL, "strings": STRINGS}[layout])
    change(row)
    with pytest.raises(BadRowError) as caught:
        encode_pair(row, tokenizer, TruncationSettings(), layout=layout)
    assert caught.value.reason == reason


def test_every_reason_is_tested():
    tested = {reason for _, _, reason in CASES} | {"empty_response_after_truncation"}  # see test_datamodule
    assert tested == set(BAD_ROW_REASONS)
