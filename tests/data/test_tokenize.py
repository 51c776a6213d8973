"""The reference data recipe on the real Llama 3 tokenizer: exact ids, one BOS, EOS, masking, truncation."""

from __future__ import annotations

import pytest

from data.tokenize import IGNORE_INDEX, BadRowError, TruncationSettings, encode_pair, split_turns, truncate


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def row(prompt: str = "What is a cat?", chosen: str = "A small pet.", rejected: str = "No.") -> dict:
    user = {"role": "user", "content": prompt}
    return {
        "prompt": prompt,
        "chosen": [user, {"role": "assistant", "content": chosen}],
        "rejected": [user, {"role": "assistant", "content": rejected}],
    }


def test_exact_ids_of_a_templated_pair(llama3_tokenizer):
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

    out = encode_pair(row(), tok, TruncationSettings(max_length=512, max_prompt_length=256))

    assert out["chosen_input_ids"] == prompt + chosen
    assert out["rejected_input_ids"] == prompt + rejected
    assert out["chosen_labels"] == [IGNORE_INDEX] * len(prompt) + chosen
    assert out["rejected_labels"] == [IGNORE_INDEX] * len(prompt) + rejected
    # Exactly one BOS, at the start; the assistant header belongs to the response; EOS (<|eot_id|>) ends it.
    for key in ("chosen_input_ids", "rejected_input_ids"):
        assert out[key].count(bos) == 1 and out[key][0] == bos
        assert out[key][-1] == tok.eos_token_id == eot


def test_bundled_tokenizer_adds_bos_like_the_released_one(llama3_tokenizer):
    assert llama3_tokenizer("hi")["input_ids"][0] == 128000
    assert llama3_tokenizer("hi", add_special_tokens=False)["input_ids"][0] != 128000
    assert len(llama3_tokenizer) == 128256


def test_prompt_message_list_and_multi_turn(llama3_tokenizer):
    turns = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "What is a cat?"},
    ]
    r = row()
    r["prompt"] = turns
    prompt_turns, chosen, rejected = split_turns(r)
    assert prompt_turns == turns and chosen["content"] == "A small pet." and rejected["content"] == "No."
    out = encode_pair(r, llama3_tokenizer, TruncationSettings())
    text = llama3_tokenizer.decode(out["chosen_input_ids"])
    assert text.count("<|begin_of_text|>") == 1 and "Hello." in text and text.endswith("A small pet.<|eot_id|>")


def test_empty_system_message_when_the_template_mentions_system(llama3_tokenizer):
    tok = llama3_tokenizer
    original = tok.chat_template
    tok.chat_template = original + "{# system #}"
    try:
        out = encode_pair(row(), tok, TruncationSettings())
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


def test_encode_pair_truncates_to_max_length(llama3_tokenizer):
    long_prompt = " ".join(["word"] * 200)
    settings = TruncationSettings(max_length=64, max_prompt_length=32, truncation_mode="keep_end")
    out = encode_pair(row(prompt=long_prompt, chosen="yes " * 100), llama3_tokenizer, settings)
    assert len(out["chosen_input_ids"]) == 64  # 32 prompt + 32 response tokens
    assert out["chosen_input_ids"][0] == llama3_tokenizer.bos_token_id
    assert sum(label != IGNORE_INDEX for label in out["chosen_labels"]) == 32


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda r: r.pop("chosen"), "chosen_not_message_list"),
        (lambda r: r.update(rejected="text"), "rejected_not_message_list"),
        (lambda r: r["chosen"].append({"role": "user", "content": "x"}), "chosen_last_turn_not_assistant"),
        (lambda r: r["rejected"][-1].update(content="  "), "rejected_blank_content"),
    ],
)
def test_bad_rows_name_their_reason(llama3_tokenizer, change, reason):
    r = row()
    change(r)
    with pytest.raises(BadRowError) as caught:
        encode_pair(r, llama3_tokenizer, TruncationSettings())
    assert caught.value.reason == reason


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
            encode_pair(row(), tok, TruncationSettings())
    finally:
        tok.chat_template = original
