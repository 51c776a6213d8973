"""``load_model_tokenizer``: the one place a ``model`` section's keys become a tokenizer (train, evaluate, sample),
with every source checked first and the key named."""

from __future__ import annotations

import pytest

from simpo.errors import MissingFileError
from simpo.loading.policy_source import load_model_tokenizer


def test_a_random_model_gets_the_bundled_default_and_model_tokenizer_wins(tmp_path, llama3_tokenizer):
    assert len(load_model_tokenizer(None, None)) == len(llama3_tokenizer) == 128256
    llama3_tokenizer.save_pretrained(tmp_path / "tok")
    (tmp_path / "model").mkdir()  # no tokenizer files: not read, model.tokenizer is set
    loaded = load_model_tokenizer(str(tmp_path / "model"), str(tmp_path / "tok"))
    assert loaded.encode("Hello") == llama3_tokenizer.encode("Hello")


@pytest.mark.parametrize(
    ("name_or_path", "tokenizer", "stored", "message"),
    [
        ("{tmp}/missing", None, "", r"^model\.name_or_path={tmp}/missing: no such directory"),
        ("{tmp}/empty", None, "", r"^model\.name_or_path={tmp}/empty holds no tokenizer files"),
        (None, "{tmp}/missing", "", r"^model\.tokenizer={tmp}/missing: no such directory"),
        ("{tmp}/missing", "llama3", "", r"^model\.name_or_path={tmp}/missing: no such directory"),
        ("{tmp}/empty", None, " (in the training config of ckpt_path=x.ckpt)",
         r"^model\.name_or_path \(in the training config of ckpt_path=x\.ckpt\)={tmp}/empty holds no tokenizer"),
    ],
)  # fmt: skip
def test_each_bad_source_is_named_by_its_key(tmp_path, name_or_path, tokenizer, stored, message):
    (tmp_path / "empty").mkdir()
    fill = {"tmp": str(tmp_path)}
    with pytest.raises(MissingFileError, match=message.format(**fill).replace(str(tmp_path), "[^ ]*")):
        load_model_tokenizer(name_or_path and name_or_path.format(**fill), tokenizer and tokenizer.format(**fill),
                             stored)  # fmt: skip
