"""Bundled chat templates: names, Mistral and Gemma 2 layouts with their system-role handling."""

from __future__ import annotations

import pytest

from data.tokenizers import bundled_chat_template, override_chat_template

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "What is a cat?"},
]


@pytest.fixture
def scratch_tokenizer(llama3_tokenizer):
    """The Llama 3 tokenizer, its template restored after the test."""
    original = llama3_tokenizer.chat_template
    yield llama3_tokenizer
    llama3_tokenizer.chat_template = original


def test_mistral_template(mistral_tokenizer):
    render = mistral_tokenizer.apply_chat_template
    assert render(CONVERSATION, tokenize=False) == (
        "<s> [INST] Be brief.\n\nHi [/INST] Hello.</s> [INST] What is a cat? [/INST]"
    )
    assert render(CONVERSATION[1:], tokenize=False) == render([{"role": "system", "content": ""}, *CONVERSATION[1:]],
                                                               tokenize=False)  # fmt: skip
    assert render([CONVERSATION[2]], tokenize=False) == "<s> Hello.</s>"  # a response renders on its own


def test_gemma2_template_with_any_tokenizer(scratch_tokenizer):
    override_chat_template(scratch_tokenizer, "gemma2")
    bos = scratch_tokenizer.bos_token
    text = scratch_tokenizer.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    assert text == (
        f"{bos}<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\nWhat is a cat?<end_of_turn>\n<start_of_turn>model\n"
    )
    blank_system = [{"role": "system", "content": ""}, CONVERSATION[1]]
    assert scratch_tokenizer.apply_chat_template(blank_system, tokenize=False) == (
        f"{bos}<start_of_turn>user\nHi<end_of_turn>\n"
    )


def test_unknown_name_and_jinja_string(scratch_tokenizer):
    with pytest.raises(ValueError, match=r"data\.chat_template='chatml'.*llama3.*mistral"):
        override_chat_template(scratch_tokenizer, "chatml")
    override_chat_template(scratch_tokenizer, "{{ messages[0]['content'] }}")
    assert scratch_tokenizer.apply_chat_template([CONVERSATION[1]], tokenize=False) == "Hi"
    assert "start_of_turn" in bundled_chat_template("gemma2")
