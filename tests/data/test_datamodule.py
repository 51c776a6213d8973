"""The data module end to end: report counts, drop limit, cache hit, val_size, layouts and column mapping."""

from __future__ import annotations

import json
import logging
import types

import datasets
import pytest

from data.datamodule import PreferenceDataModule
from data.layouts import BadRowError
from data.pair_encoding import PairEncoder, TruncationSettings
from tests.data.conftest import uf_row, write_split

ROWS = [uf_row(prompt=f"Question number {i}?", chosen=f"Answer {i}.") for i in range(40)]


def _module(tokenizer, dataset, tmp_path, **kwargs):
    settings = {"test_split": None, "max_length": 256, "max_prompt_length": 128, "report_dir": str(tmp_path / "run"),
                **kwargs}  # fmt: skip
    return PreferenceDataModule(tokenizer, str(dataset), **settings)


def test_report_counts_drops_by_reason_and_is_written(tokenizer, tmp_path, isolated_cache, caplog):
    rows = [dict(r) for r in ROWS]
    rows[5] = {**ROWS[5], "rejected": ROWS[5]["chosen"]}  # chosen_equals_rejected
    rows[9] = {**ROWS[9], "chosen": None}  # missing_field
    rows[30] = {**ROWS[30], "rejected": ROWS[30]["chosen"]}
    write_split(tmp_path / "d", "train_prefs", rows)
    with caplog.at_level(logging.INFO, logger="data.datamodule"):
        module = _module(tokenizer, tmp_path / "d", tmp_path, max_drop_fraction=0.1)
        module.setup()
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    train = report["splits"]["train"]
    assert (train["read"], train["kept"], train["layout"]) == (40, 37, "ultrafeedback")
    assert train["dropped"] == {"chosen_equals_rejected": {"count": 2, "examples": [5, 30]},
                                "missing_field": {"count": 1, "examples": [9]}}  # fmt: skip
    assert set(train["tokens"]) == {"prompt", "chosen", "rejected"} and train["tokens"]["prompt"]["p50"] > 0
    assert train["truncated"] == {"prompts": 0, "responses": 0} and report["validation"] == "none"
    assert len(module.splits["train"]) == 37 and "val" not in module.splits
    assert "chosen_equals_rejected=2 (rows [5, 30])" in caplog.text  # the printed table
    assert "training runs without validation" in caplog.text

    with pytest.raises(
        ValueError, match=r"data\.max_drop_fraction=0\.01.*chosen_equals_rejected: 2 \(rows \[5, 30\]\)"
    ):
        _module(tokenizer, tmp_path / "d", tmp_path).setup()


def test_truncated_counts(tokenizer, tmp_path, isolated_cache):
    long_prompt = " ".join(f"word{i}" for i in range(300))
    write_split(tmp_path / "d", "train_prefs", [uf_row(prompt=long_prompt, chosen="yes " * 200), *ROWS[:3]])
    module = _module(tokenizer, tmp_path / "d", tmp_path, max_length=64, max_prompt_length=32, max_drop_fraction=0)
    module.setup()
    assert module.report["splits"]["train"]["truncated"] == {"prompts": 1, "responses": 1}
    assert len(module.splits["train"][0]["chosen_input_ids"]) == 64


def test_a_response_is_never_cut_to_nothing():
    fake = types.SimpleNamespace(bos_token_id=1, eos_token_id=None)
    encoder = PairEncoder(fake, TruncationSettings(8, 4), "strings")  # type: ignore[arg-type]
    with pytest.raises(BadRowError) as caught:
        encoder.assemble([1, 5], [], [7])
    assert caught.value.reason == "empty_response_after_truncation"


def test_second_setup_hits_the_cache_and_a_setting_change_misses(tokenizer, tmp_path, isolated_cache, monkeypatch):
    write_split(tmp_path / "d", "train_prefs", ROWS)
    first = _module(tokenizer, tmp_path / "d", tmp_path)
    first.prepare_data()  # tokenises and caches once (rank 0), setup then takes it
    first.setup()
    assert first.report["splits"]["train"]["cache"]["hit"] is False
    assert len(list((isolated_cache / "tokenized").iterdir())) == 1

    with monkeypatch.context() as patch:  # (undo() would also undo isolated_cache's SIMPO_CACHE)
        patch.setattr(PairEncoder, "__call__", lambda *a, **k: pytest.fail("tokenised again"))
        second = _module(tokenizer, tmp_path / "d", tmp_path)
        second.setup()
    assert second.report["splits"]["train"]["cache"]["hit"] is True
    assert second.splits["train"][:] == first.splits["train"][:]

    third = _module(tokenizer, tmp_path / "d", tmp_path, max_length=200)
    third.setup()
    assert third.report["splits"]["train"]["cache"]["hit"] is False


@pytest.mark.parametrize("val_size", [0.25, 10])
def test_val_size_carves_a_seeded_validation_set(llama3_tokenizer, tmp_path, isolated_cache, val_size):
    write_split(tmp_path / "d", "train_prefs", ROWS)
    module = _module(llama3_tokenizer, tmp_path / "d", tmp_path, val_size=val_size, seed=3)
    module.setup()
    train, val = (module.splits[role] for role in ("train", "val"))
    assert (len(train), len(val)) == (30, 10)
    decode = lambda pairs: {llama3_tokenizer.decode(p["chosen_input_ids"]) for p in pairs}  # noqa: E731
    assert not decode(train) & decode(val)
    again = _module(llama3_tokenizer, tmp_path / "d", tmp_path, val_size=val_size, seed=3)
    again.setup("validate")
    assert list(again.splits) == ["val"] and again.splits["val"][:] == val[:]
    other = _module(llama3_tokenizer, tmp_path / "d", tmp_path, val_size=val_size, seed=4)
    other.setup("validate")
    assert decode(other.splits["val"]) != decode(val)
    assert module.report["validation"] == "val_size"


def test_val_size_errors(llama3_tokenizer, tmp_path):
    with pytest.raises(ValueError, match=r"data\.val_size=0\.1 .*data\.test_split=null"):
        PreferenceDataModule(llama3_tokenizer, "x", test_split="test", val_size=0.1)
    write_split(tmp_path / "d", "train_prefs", ROWS[:4])
    with pytest.raises(ValueError, match=r"data\.val_size=4 gives 4 validation rows out of 4"):
        _module(llama3_tokenizer, tmp_path / "d", tmp_path, val_size=4).setup()


def test_layouts_and_column_mapping_end_to_end(tokenizer, tmp_path, isolated_cache):
    plain = [{"question": f"Q{i}?", "good": f"Yes {i}.", "bad": "No."} for i in range(8)]
    trl = [{"prompt": [{"role": "user", "content": f"Q{i}?"}],
            "chosen": [{"role": "assistant", "content": f"Yes {i}."}],
            "rejected": [{"role": "assistant", "content": "No."}]} for i in range(8)]  # fmt: skip
    write_split(tmp_path / "plain", "train", plain)
    write_split(tmp_path / "trl", "train", trl)
    mapping = {"prompt": "question", "chosen": "good", "rejected": "bad"}
    with pytest.raises(ValueError, match=r"data\.columns"):
        _module(tokenizer, tmp_path / "plain", tmp_path, train_split="train").setup()
    strings = _module(tokenizer, tmp_path / "plain", tmp_path, train_split="train", columns=mapping)
    strings.setup()
    conversational = _module(tokenizer, tmp_path / "trl", tmp_path, train_split="train")
    conversational.setup()
    assert strings.report["splits"]["train"]["layout"] == "strings"
    assert conversational.report["splits"]["train"]["layout"] == "trl"
    assert strings.splits["train"][:] == conversational.splits["train"][:]


def test_validate_stage_loads_only_the_test_split(llama3_tokenizer, tmp_path, isolated_cache):
    write_split(tmp_path / "d", "train_prefs", ROWS)
    write_split(tmp_path / "d", "test_prefs", ROWS[:6])
    module = _module(llama3_tokenizer, tmp_path / "d", tmp_path, test_split="test_prefs")
    module.setup("validate")
    assert list(module.splits) == ["val"] and len(module.splits["val"]) == 6
    batch = next(iter(module.val_dataloader()))
    assert batch["input_ids"].shape[0] == 2 * 2  # batch_size 2 pairs -> (2B, T)


def test_malformed_json_lines_are_dropped_and_counted_by_line_number(tokenizer, tmp_path, isolated_cache, caplog):
    lines = [json.dumps(row) for row in ROWS]
    lines[7] = {**ROWS[7], "rejected": ROWS[7]["chosen"]}  # chosen_equals_rejected: row 7 of the rows read
    lines[7] = json.dumps(lines[7])
    lines.insert(2, '{"prompt": "cut off", "chosen": [')  # line 3
    lines.insert(20, "{'prompt': 'single quotes'}")  # line 21
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train_prefs.jsonl").write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.INFO, logger="data.datamodule"):
        module = _module(tokenizer, tmp_path / "d", tmp_path, max_drop_fraction=0.1)
        module.setup()
    train = json.loads((tmp_path / "run" / "data_report.json").read_text())["splits"]["train"]
    assert (train["read"], train["kept"]) == (42, 39)
    assert train["dropped"] == {"malformed_json": {"count": 2, "lines": [3, 21]},
                                "chosen_equals_rejected": {"count": 1, "examples": [7]}}  # fmt: skip
    assert "malformed_json=2 (lines [3, 21])" in caplog.text

    with pytest.raises(ValueError, match=r"more than data\.max_drop_fraction=0\.01\. Top reasons: malformed_json: 2 "
                                         r"\(lines \[3, 21\]\); chosen_equals_rejected: 1 \(rows \[7\]\)"):  # fmt: skip
        _module(tokenizer, tmp_path / "d", tmp_path).setup()


def test_no_usable_rows_left_is_an_error_even_when_every_drop_is_allowed(llama3_tokenizer, tmp_path, isolated_cache):
    rows = [{**row, "rejected": row["chosen"]} for row in ROWS[:6]]
    write_split(tmp_path / "d", "train_prefs", [*rows, {**ROWS[6], "chosen": None}])
    with pytest.raises(
        ValueError,
        match=rf"^no usable rows remain in split 'train_prefs' of data\.dataset={tmp_path / 'd'}: "
        r"chosen_equals_rejected: 6 \(rows \[0, 1, 2, 3, 4\]\); missing_field: 1 \(rows \[6\]\) \(all 7 rows read",
    ):
        _module(llama3_tokenizer, tmp_path / "d", tmp_path, max_drop_fraction=1.0).setup()
    (tmp_path / "bad.jsonl").write_text("oops\n\n{nope\n")
    with pytest.raises(
        ValueError, match=r"no usable rows remain in split 'bad\.jsonl' .*malformed_json: 2 \(lines \[1, 3\]"
    ):
        _module(llama3_tokenizer, tmp_path / "bad.jsonl", tmp_path, max_drop_fraction=1.0, val_size=0.5).setup()


def test_loading_says_the_right_split_name_and_keeps_the_tokenising_progress(
    llama3_tokenizer, tmp_path, isolated_cache, capfd
):
    write_split(tmp_path / "d", "train_prefs", ROWS)
    write_split(tmp_path / "d", "test_prefs", ROWS[:8])
    _module(llama3_tokenizer, tmp_path / "d", tmp_path, test_split="test_prefs").setup()
    printed = capfd.readouterr().err
    assert "Generating" not in printed  # was "Generating train split" for every file, the test split's too
    assert "Flattening" not in printed and "Saving the dataset" not in printed  # internal steps stay quiet
    assert "tokenising train_prefs" in printed and "tokenising test_prefs" in printed
    assert not datasets.are_progress_bars_disabled()  # the setting is back as it was
