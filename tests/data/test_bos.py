"""Single BOS on the token ids: a second BOS (from the template or from the data) is caught, explained and fixed."""

from __future__ import annotations

import pytest

from data.bos import count_extra_bos, has_single_bos, remove_extra_bos
from data.datamodule import PreferenceDataModule
from data.pair_encoding import TruncationSettings, encode_pair
from tests.data.conftest import uf_row, write_split


def test_id_level_helpers():
    assert count_extra_bos([1, 5, 1], [1, 7], [8], bos_id=1) == 2
    assert remove_extra_bos([1, 5, 1], [1, 7], [8], bos_id=1) == ([1, 5], [7], [8])
    assert has_single_bos([1, 5, 7], 1) and not has_single_bos([1, 1, 5], 1) and not has_single_bos([5, 1], 1)


def test_a_rendered_template_in_the_text_is_caught_then_fixed(tokenizer):
    row = uf_row(prompt=f"{tokenizer.bos_token}What is a cat?")  # text that already holds a rendered template
    with pytest.raises(ValueError, match=r"data\.bos_policy=fix"):
        encode_pair(row, tokenizer, TruncationSettings(), bos_policy="error")
    fixed = encode_pair(row, tokenizer, TruncationSettings(), bos_policy="fix")
    clean = encode_pair(uf_row(), tokenizer, TruncationSettings())
    for key in ("chosen_input_ids", "rejected_input_ids"):
        assert has_single_bos(fixed[key], tokenizer.bos_token_id)
    assert len(fixed["chosen_input_ids"]) <= len(clean["chosen_input_ids"]) + 2


def _module(tokenizer, directory, tmp_path, **kwargs):
    return PreferenceDataModule(tokenizer, str(directory), test_split=None, max_length=256, max_prompt_length=128,
                                report_dir=str(tmp_path / "run"), **kwargs)  # fmt: skip


def test_setup_names_the_data_cause_shows_a_row_and_fixes(tokenizer, tmp_path, isolated_cache):
    rows = [uf_row(prompt=f"Question {i}?") for i in range(20)]
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "Question 3?"}], tokenize=False)
    rows[3] = uf_row(prompt=rendered)  # the prompt text is itself a rendered template
    write_split(tmp_path / "d", "train_prefs", rows)
    with pytest.raises(ValueError, match=r"row\(s\) .*hold special-token strings in their message text"):
        _module(tokenizer, tmp_path / "d", tmp_path).setup()  # data.special_text=refuse catches it first
    with pytest.raises(ValueError) as caught:  # a data set that means its control tokens: the BOS is still single
        _module(tokenizer, tmp_path / "d", tmp_path, special_text="allow").setup()
    message = str(caught.value)
    assert "1 rows contain a rendered template in their text" in message
    assert "Example: row 3" in message and "data.bos_policy=fix" in message

    module = _module(tokenizer, tmp_path / "d", tmp_path, bos_policy="fix", special_text="allow")
    module.setup()
    assert module.report["splits"]["train"]["bos_repairs"] == {"rows": 1, "tokens": 1, "examples": [3]}
    for pair in module.splits["train"]:
        assert has_single_bos(pair["chosen_input_ids"], tokenizer.bos_token_id)
        assert has_single_bos(pair["rejected_input_ids"], tokenizer.bos_token_id)


def test_setup_names_a_template_that_writes_bos_twice(tokenizer, tmp_path, isolated_cache):
    write_split(tmp_path / "d", "train_prefs", [uf_row(prompt=f"Q{i}?") for i in range(4)])
    original = tokenizer.chat_template
    template = "{{ bos_token }}" + original  # writes BOS, then the template writes it again
    try:
        with pytest.raises(
            ValueError, match=rf"the chat template already writes {tokenizer.bos_token.replace('|', '.')}"
        ):
            _module(tokenizer, tmp_path / "d", tmp_path, chat_template=template).setup()
    finally:
        tokenizer.chat_template = original  # the override changed the shared tokenizer
