"""Special-token strings inside message content are text, never control tokens.

The chat template writes a turn's control tokens itself (``<|start_header_id|>``, ``<|eot_id|>``, ``[INST]``,
``<start_of_turn>``); a tokenizer that parses special tokens in its input would also turn the same strings inside a
message into those ids, so a response containing ``<|eot_id|><|start_header_id|>user...`` would train as a real end
of turn and a new user turn: a data-poisoning route into every template. ``data.special_text``:

- ``refuse`` (default): such rows stop setup, named with the tokens found and this key;
- ``escape``: their message contents are tokenised as plain text (the template's own control tokens stay special);
- ``allow``: the strings become control tokens, as before; the report counts them in every mode.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache

from transformers import PreTrainedTokenizerBase

SPECIAL_TEXT_POLICIES = ("refuse", "escape", "allow")


def special_strings(tokenizer: PreTrainedTokenizerBase) -> tuple[str, ...]:
    """Every special token's string (the named ones and the added tokens marked special), longest first."""
    names = set(getattr(tokenizer, "all_special_tokens", ()))
    names |= {token.content for token in getattr(tokenizer, "added_tokens_decoder", {}).values() if token.special}
    return tuple(sorted((name for name in names if name), key=lambda name: (-len(name), name)))


@cache
def _pattern(strings: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(s) for s in strings))


def found_in(contents: Sequence[str], strings: tuple[str, ...]) -> list[str]:
    """The special strings (sorted, once each) that occur in ``contents``."""
    if not strings:
        return []
    pattern = _pattern(strings)
    return sorted({match for text in contents for match in pattern.findall(text)})


def encode_escaped(tokenizer: PreTrainedTokenizerBase, text: str, contents: Sequence[str]) -> list[int]:
    """Token ids of a templated ``text`` whose message ``contents`` (in the order the template writes them) are
    tokenised as plain text (``split_special_tokens``), the template's parts between them as usual.

    Raises:
        ValueError: a content is not found verbatim in ``text`` (a template that rewrites contents).
    """
    ids: list[int] = []
    cursor = 0
    for content in contents:
        if not content:
            continue
        start = text.find(content, cursor)
        if start < 0 and content.strip():  # a template that trims contents (Gemma's) writes them stripped
            content = content.strip()
            start = text.find(content, cursor)
        if start < 0:
            raise ValueError("the chat template does not write a message's content verbatim: data.special_text=escape "
                             "cannot tell its text from the template's; use refuse or allow")  # fmt: skip
        ids += _ids(tokenizer, text[cursor:start], split=False) + _ids(tokenizer, content, split=True)
        cursor = start + len(content)
    return ids + _ids(tokenizer, text[cursor:], split=False)


def _ids(tokenizer: PreTrainedTokenizerBase, text: str, split: bool) -> list[int]:
    if not text:
        return []
    return tokenizer(text, add_special_tokens=False, split_special_tokens=split)["input_ids"]
