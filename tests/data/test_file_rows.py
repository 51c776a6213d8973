"""Reading one data file: malformed JSON lines and rows whose field has another type than most rows' dropped and
counted by line number, clear errors for files that cannot be rows (empty, not UTF-8, a nested type conflict, a broken
Parquet file), content-based fingerprints."""

from __future__ import annotations

import json

import datasets
import pytest

from data.file_rows import read_file
from data.sources import load_split

WHERE = "split 'train' of data.dataset=somewhere"


def test_malformed_and_non_object_lines_are_dropped_with_their_line_numbers(tmp_path):
    path = tmp_path / "rows.jsonl"
    lines = ['{"a": 1}', '{"a": 2', "", "[1, 2]", '{"a": NaN}', "   ", '"text"', '{"a": 3}']
    path.write_text("\n".join(lines) + "\n")
    read = read_file(path, WHERE)
    assert read.rows["a"] == [1, 3]  # row indices count the rows read: {"a": 3} is row 1
    assert read.malformed_lines == [2, 4, 5, 7]  # 1-based; blank lines are neither rows nor malformed


def test_a_file_of_only_malformed_lines_reads_no_row_but_counts_them(tmp_path):
    (tmp_path / "rows.jsonl").write_text("not json\n{oops\n")
    read = read_file(tmp_path / "rows.jsonl", WHERE)
    assert (len(read.rows), read.malformed_lines) == (0, [1, 2])


@pytest.mark.parametrize("content", [b"", b"\n\n   \n"], ids=["zero-bytes", "blank-lines"])
def test_an_empty_file_names_the_file_the_split_and_the_key(tmp_path, content):
    write_rows = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n"
    (tmp_path / "train_prefs.jsonl").write_text(write_rows)
    (tmp_path / "test_prefs.jsonl").write_bytes(content)
    with pytest.raises(ValueError) as caught:
        load_split(str(tmp_path), "test_prefs")
    message = str(caught.value)
    assert str(tmp_path / "test_prefs.jsonl") in message and "holds no rows" in message
    assert f"split 'test_prefs' of data.dataset={tmp_path}" in message


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [("rows.jsonl", b'{"a": "ok"}\n{"a": "caf\xe9"}\n', 2),
     ("rows.jsonl", b'{"a": "ok"}\n{"a": "x"}\n{"a": [{"b": "\xff\xfe"}]}\n', 3),
     ("rows.json", b'[{"a": "ok"},\n {"a": "caf\xe9"}]', 2),
     ("rows.json", b'{"a": "ok"}\n\n{"a": "caf\xe9"}\n', 3)],
)  # fmt: skip
def test_bytes_that_are_not_utf8_name_the_file_and_the_line(tmp_path, name, content, line):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=rf"{name} line {line} is not valid UTF-8 .*data\.dataset=") as caught:
        load_split(str(tmp_path / name), "train")
    assert str(tmp_path / name) in str(caught.value)


def test_a_utf8_byte_order_mark_is_not_an_error(tmp_path):
    (tmp_path / "rows.jsonl").write_bytes(b'\xef\xbb\xbf{"a": 1}\n{"a": 2}\n')
    assert read_file(tmp_path / "rows.jsonl", WHERE).rows["a"] == [1, 2]


def test_a_row_whose_field_has_another_type_than_most_rows_is_dropped_with_its_line_number(tmp_path):
    turn = '{"chosen": [{"role": "assistant", "content": "x"}], "score": 1}'
    lines = [turn, "", '{"chosen": "just text", "score": 2}', turn, '{"chosen": null, "score": 3}', turn]
    (tmp_path / "rows.jsonl").write_text("\n".join(lines) + "\n")
    read = read_file(tmp_path / "rows.jsonl", WHERE)
    assert read.mixed_type_lines == [3] and read.malformed_lines == []  # a null agrees with any type
    assert read.rows["score"] == [1, 1, 3, 1]


def test_a_type_conflict_below_the_top_level_still_names_the_lines(tmp_path):
    lines = ['{"chosen": [{"role": "assistant", "content": "x"}]}', '{"chosen": [{"role": "assistant", "content": 5}]}']
    (tmp_path / "rows.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"cannot be read as one table of rows"):
        read_file(tmp_path / "rows.jsonl", WHERE)


def test_mixed_type_rows_count_as_dropped_rows_under_max_drop_fraction(tmp_path, llama3_tokenizer, monkeypatch):
    from data.datamodule import PreferenceDataModule
    from simpo.errors import UserError
    from tests.data.conftest import uf_row, write_split

    monkeypatch.setenv("SIMPO_CACHE", str(tmp_path / "cache"))
    rows = [uf_row(prompt=f"Q{i}?") for i in range(10)]
    rows[5]["chosen"] = "just text"
    write_split(tmp_path / "d", "train_prefs", rows)

    def module(fraction: float) -> PreferenceDataModule:
        return PreferenceDataModule(llama3_tokenizer, str(tmp_path / "d"), test_split=None, max_length=128,
                                    max_prompt_length=64, max_drop_fraction=fraction)  # fmt: skip

    with pytest.raises(UserError, match=r"dropped 1 of 10 rows .*mixed_field_type: 1 \(lines \[6\]\)"):
        module(0.01).setup()
    accepted = module(0.2)
    accepted.setup()
    report = accepted.report["splits"]["train"]
    assert (report["read"], report["kept"]) == (10, 9)
    assert report["dropped"]["mixed_field_type"] == {"count": 1, "lines": [6]}


def test_types_are_inferred_over_every_row_and_long_lines_load(tmp_path):
    nulls = '{"chosen": null}\n' * 80_000  # > 1 MiB of nulls before the first list: one pyarrow block is not enough
    (tmp_path / "rows.jsonl").write_text(nulls + '{"chosen": [{"role": "user", "content": "x"}]}\n')
    rows = read_file(tmp_path / "rows.jsonl", WHERE).rows
    assert len(rows) == 80_001 and rows[-1]["chosen"] == [{"role": "user", "content": "x"}]
    (tmp_path / "long.jsonl").write_text(json.dumps({"prompt": "word " * 500_000}) + "\n")  # a 2.5 MB line
    assert len(read_file(tmp_path / "long.jsonl", WHERE).rows[0]["prompt"]) == 2_500_000


def test_json_array_files(tmp_path):
    (tmp_path / "rows.json").write_text(json.dumps([{"a": 1}, {"a": 2}], indent=2))
    assert read_file(tmp_path / "rows.json", WHERE).rows["a"] == [1, 2]
    (tmp_path / "bad.json").write_text(json.dumps([{"a": 1}, 3, "x"]))
    with pytest.raises(ValueError, match=r"2 of the 3 elements of its JSON array are not row objects \(elements \[1"):
        read_file(tmp_path / "bad.json", WHERE)
    (tmp_path / "broken.json").write_text('[{"a": 1},\n {"a": ]')
    with pytest.raises(ValueError, match=r"broken\.json is not valid JSON \(.*line 2"):
        read_file(tmp_path / "broken.json", WHERE)


def test_parquet_files(tmp_path):
    datasets.Dataset.from_list([{"a": 1}]).to_parquet(str(tmp_path / "rows.parquet"))
    assert read_file(tmp_path / "rows.parquet", WHERE).rows["a"] == [1]
    datasets.Dataset.from_list([{"a": 1}]).select([]).to_parquet(str(tmp_path / "none.parquet"))
    with pytest.raises(ValueError, match=r"none\.parquet holds no rows"):
        read_file(tmp_path / "none.parquet", WHERE)
    (tmp_path / "empty.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.parquet is not a readable Parquet file \(ArrowInvalid: .*0 bytes"):
        read_file(tmp_path / "empty.parquet", WHERE)


def test_the_fingerprint_is_the_content(tmp_path):
    text = '{"a": 1}\n{"a": 2}\n'
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "rows.jsonl").write_text(text)
    one, two = (read_file(tmp_path / name / "rows.jsonl", WHERE).rows._fingerprint for name in ("one", "two"))
    assert one == two
    (tmp_path / "two" / "rows.jsonl").write_text(text.replace("2", "3"))
    assert read_file(tmp_path / "two" / "rows.jsonl", WHERE).rows._fingerprint != one
