"""The reference data recipe on the real Llama 3 and Mistral tokenizers: exact ids, one BOS, EOS, masks, truncation."""

from __future__ import annotations

import pytest

from data.pair_encoding import TruncationSettings, encode_pair, split_turns, truncate
from simpo.core.logprobs import IGNORE_INDEX
from tests.data.conftest import uf_row


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_exact_ids_of_a_templated_pair_llama3(llama3_tokenizer):
    tok = llama3_tokenizer
    special = tok.convert_tokens_to_ids
    bos, start, end, eot = (
        special(t) for t in ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
    )
    assert (bos, start, end, eot) == (128000, 128006, 128007, 128009)  # the released Llama 3 ids
    header = lambda role: [start, *ids(tok, role), end, *ids(tok, "\n\n")]  # noqa: E731
    prompt = [bos, *header("user"), *ids(tok, "What is a cat?"), eot]
    chosen = [*header("assistant"), *ids(tok, "A small pet."), eot]
    rejected = [*header("assistant"), *ids(tok, "No."), eot]

    out = encode_pair(uf_row(), tok, TruncationSettings(max_length=512, max_prompt_length=256))

    assert out["chosen_input_ids"] == prompt + chosen
    assert out["rejected_input_ids"] == prompt + rejected
    assert out["chosen_labels"] == [IGNORE_INDEX] * len(prompt) + chosen
    assert out["rejected_labels"] == [IGNORE_INDEX] * len(prompt) + rejected
    for key in ("chosen_input_ids", "rejected_input_ids"):
        assert out[key].count(bos) == 1 and out[key][0] == bos
        assert out[key][-1] == tok.eos_token_id == eot


def test_exact_ids_of_a_templated_pair_mistral(mistral_tokenizer):
    tok = mistral_tokenizer
    bos, eos = 1, 2
    # <s> [INST] What is a cat? [/INST] | A small pet.</s>: SentencePiece pieces "▁[", "INST", "]", "▁What", ...
    prompt = [bos, *ids(tok, " [INST] What is a cat? [/INST]")]
    assert prompt == [1, 733, 16289, 28793, 1824, 349, 264, 5255, 28804, 733, 28748, 16289, 28793]
    chosen = [*ids(tok, " A small pet."), eos]
    rejected = [*ids(tok, " No."), eos]

    out = encode_pair(uf_row(), tok, TruncationSettings(max_length=512, max_prompt_length=256))

    assert out["chosen_input_ids"] == prompt + chosen
    assert out["rejected_input_ids"] == prompt + rejected
    assert out["chosen_labels"] == [IGNORE_INDEX] * len(prompt) + chosen
    assert out["rejected_labels"] == [IGNORE_INDEX] * len(prompt) + rejected


@pytest.mark.parametrize("name", ["mistral-v1", "mistral-v3"])
def test_mistral_pair_matches_mistral_common(name, mistral_tokenizer, mistral_v3_tokenizer):
    """The templated sequence is exactly what Mistral's own tokenizer library encodes for the conversation."""
    from mistral_common.protocol.instruct.messages import AssistantMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    tok, reference = (
        (mistral_tokenizer, MistralTokenizer.v1())
        if name == "mistral-v1"
        else (mistral_v3_tokenizer, MistralTokenizer.v3())
    )
    row = uf_row()
    row["prompt"] = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                     {"role": "user", "content": "What is a cat?"}]  # fmt: skip
    out = encode_pair(row, tok, TruncationSettings(), layout="trl")
    messages = [UserMessage(content="Hi"), AssistantMessage(content="Hello."), UserMessage(content="What is a cat?")]
    prompt = reference.encode_chat_completion(ChatCompletionRequest(messages=messages)).tokens
    answer = reference.instruct_tokenizer.tokenizer.encode("A small pet.", bos=False, eos=True)
    assert out["chosen_input_ids"] == prompt + answer
    assert out["chosen_labels"] == [IGNORE_INDEX] * len(prompt) + answer


def test_bundled_tokenizers_add_bos_like_the_released_ones(llama3_tokenizer, mistral_tokenizer, mistral_v3_tokenizer):
    assert llama3_tokenizer("hi")["input_ids"][0] == 128000
    assert llama3_tokenizer("hi", add_special_tokens=False)["input_ids"][0] != 128000
    assert len(llama3_tokenizer) == 128256
    for tok, size in ((mistral_tokenizer, 32000), (mistral_v3_tokenizer, 32768)):
        assert (tok.bos_token, tok.bos_token_id, tok.eos_token, tok.eos_token_id) == ("<s>", 1, "</s>", 2)
        assert tok("hi")["input_ids"][0] == 1 and tok("hi", add_special_tokens=False)["input_ids"][0] != 1
        assert len(tok) == size
    assert mistral_v3_tokenizer.convert_tokens_to_ids(["[INST]", "[/INST]"]) == [3, 4]


def test_prompt_message_list_and_multi_turn(tokenizer):
    turns = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "What is a cat?"},
    ]
    r = uf_row()
    r["prompt"] = turns
    prompt_turns, chosen, rejected = split_turns(r)
    assert prompt_turns == turns and chosen["content"] == "A small pet." and rejected["content"] == "No."
    out = encode_pair(r, tokenizer, TruncationSettings())
    text = tokenizer.decode(out["chosen_input_ids"])
    assert text.count(tokenizer.bos_token) == 1 and "Hello." in text
    assert text.endswith("A small pet." + tokenizer.eos_token)


def test_empty_system_message_when_the_template_mentions_system(llama3_tokenizer):
    tok = llama3_tokenizer
    original = tok.chat_template
    tok.chat_template = original + "{# system #}"
    try:
        out = encode_pair(uf_row(), tok, TruncationSettings())
    finally:
        tok.chat_template = original
    text = tok.decode(out["chosen_input_ids"])
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n<|eot_id|>")


def test_truncation_keep_end_keeps_bos_and_last_prompt_tokens():
    prompt, chosen, rejected = [0, 1, 2, 3, 4, 5, 6, 7], [10, 11], [20]
    settings = TruncationSettings(max_length=6, max_prompt_length=4, truncation_mode="keep_end")
    assert truncate(prompt, chosen, rejected, settings, bos_id=0) == ([0, 5, 6, 7], [10, 11], [20])


def test_truncation_keep_start_and_response_cut():
    prompt, chosen, rejected = [0, 1, 2, 3, 4, 5, 6, 7], [10, 11, 12, 13], [20]
    settings = TruncationSettings(max_length=6, max_prompt_length=4, truncation_mode="keep_start")
    # prompt -> 4 tokens; 4 + 4 > 6 still, so responses are cut to 6 - 4 = 2 tokens.
    assert truncate(prompt, chosen, rejected, settings, bos_id=0) == ([0, 1, 2, 3], [10, 11], [20])


def test_no_truncation_when_the_pair_fits():
    settings = TruncationSettings(max_length=10, max_prompt_length=4)
    assert truncate([0, 1, 2, 3, 4], [10, 11], [20], settings, bos_id=0) == ([0, 1, 2, 3, 4], [10, 11], [20])


@pytest.mark.parametrize("mode", ["keep_end", "keep_start"])
def test_encode_pair_truncates_to_max_length(tokenizer, mode):
    words = [f"w{i}" for i in range(200)]
    full = encode_pair(uf_row(prompt=" ".join(words), chosen="yes " * 100), tokenizer, TruncationSettings(4096, 2048))
    full_prompt = [t for t, label in zip(full["chosen_input_ids"], full["chosen_labels"], strict=True) if label == -100]
    settings = TruncationSettings(max_length=64, max_prompt_length=32, truncation_mode=mode)
    out = encode_pair(uf_row(prompt=" ".join(words), chosen="yes " * 100), tokenizer, settings)
    prompt = [t for t, label in zip(out["chosen_input_ids"], out["chosen_labels"], strict=True) if label == -100]
    assert len(out["chosen_input_ids"]) == 64  # 32 prompt + 32 response tokens
    assert prompt[0] == tokenizer.bos_token_id and out["chosen_input_ids"].count(tokenizer.bos_token_id) == 1
    expected = full_prompt[:32] if mode == "keep_start" else [full_prompt[0], *full_prompt[-31:]]
    assert prompt == expected
    assert sum(label != IGNORE_INDEX for label in out["chosen_labels"]) == 32
    assert len(out["rejected_input_ids"]) > 32  # the short response is not cut


def test_truncation_settings_reject_a_prompt_budget_that_leaves_no_room():
    with pytest.raises(ValueError, match=r"data.max_prompt_length \(64\)"):
        TruncationSettings(max_length=64, max_prompt_length=64)
    with pytest.raises(ValueError, match=r"data\.truncation_mode"):
        TruncationSettings(truncation_mode="middle")  # type: ignore[arg-type]


def test_tokenizer_without_template_is_an_error(llama3_tokenizer):
    tok = llama3_tokenizer
    original, tok.chat_template = tok.chat_template, None
    try:
        with pytest.raises(ValueError, match=r"data\.chat_template"):
            encode_pair(uf_row(), tok, TruncationSettings())
    finally:
        tok.chat_template = original
