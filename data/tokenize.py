"""Turn one preference row into token ids exactly as the SimPO reference recipe does.

The recipe (see ``shared/reference/simpo-recipe.md``):

- prompt turns = ``prompt`` when it is a message list, else ``chosen[:-1]``; responses = the last turn of
  ``chosen`` and ``rejected``;
- an empty system message goes first when the chat template mentions a system role;
- prompt text = chat template over the prompt turns (no generation prompt); each response text = chat
  template over the single assistant turn, with a leading BOS string removed, so the assistant header
  belongs to the response;
- tokenise with ``add_special_tokens=False``; the prompt starts with exactly one BOS (prepended only if
  missing), each response ends with EOS (appended only if missing);
- truncation: if prompt + longer response exceeds ``max_length``, cut the prompt to ``max_prompt_length``
  (``keep_end`` keeps its last tokens but, unlike the reference, keeps the BOS; ``keep_start`` its first);
  if still too long, cut each response to ``max_length - max_prompt_length``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100

Message = dict[str, str]


class BadRowError(ValueError):
    """A row that cannot become a training pair; ``reason`` is a short machine-readable cause."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class TruncationSettings:
    """Length limits of one training pair, in tokens.

    Attributes:
        max_length: longest prompt + response sequence.
        max_prompt_length: longest prompt kept when a pair is too long.
        truncation_mode: ``keep_end`` (keep the prompt's last tokens, after its BOS) or ``keep_start``.
    """

    max_length: int = 512
    max_prompt_length: int = 256
    truncation_mode: Literal["keep_end", "keep_start"] = "keep_end"

    def __post_init__(self) -> None:
        if not 0 < self.max_prompt_length < self.max_length:
            raise ValueError(
                f"data.max_prompt_length ({self.max_prompt_length}) must be positive and smaller than "
                f"data.max_length ({self.max_length}), or responses could be cut to nothing"
            )
        if self.truncation_mode not in ("keep_end", "keep_start"):
            raise ValueError(f"data.truncation_mode must be keep_end or keep_start, not {self.truncation_mode!r}")


def split_turns(row: dict[str, Any]) -> tuple[list[Message], Message, Message]:
    """Return (prompt turns, chosen assistant turn, rejected assistant turn) of a row.

    Raises:
        BadRowError: when a field is missing or is not a message list ending with the assistant.
    """
    responses = []
    for key in ("chosen", "rejected"):
        value = row.get(key)
        if not isinstance(value, list) or not value:
            raise BadRowError(f"{key}_not_message_list", f"'{key}' must be a non-empty list of messages")
        last = value[-1]
        if not isinstance(last, dict) or last.get("role") != "assistant":
            raise BadRowError(f"{key}_last_turn_not_assistant", f"the last turn of '{key}' must be the assistant's")
        if not isinstance(last.get("content"), str) or not last["content"].strip():
            raise BadRowError(f"{key}_blank_content", f"the assistant turn of '{key}' has no text")
        responses.append(last)
    prompt = row.get("prompt")
    turns = prompt if isinstance(prompt, list) else row["chosen"][:-1]
    if not turns:
        raise BadRowError("empty_prompt", "the row has no prompt turns")
    return list(turns), responses[0], responses[1]


def _strip_prefix(text: str, prefix: str | None) -> str:
    return text[len(prefix) :] if prefix and text.startswith(prefix) else text


def template_texts(
    tokenizer: PreTrainedTokenizerBase, prompt: list[Message], chosen: Message, rejected: Message
) -> tuple[str, str, str]:
    """Chat-templated (prompt, chosen, rejected) texts of the reference recipe."""
    template = tokenizer.chat_template
    if not template:
        raise ValueError(
            "the tokenizer has no chat template: set data.chat_template (a bundled name or a Jinja string)"
        )
    if "system" in template and prompt[0].get("role") != "system":
        prompt = [{"role": "system", "content": ""}, *prompt]
    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False)
    chosen_text, rejected_text = (
        _strip_prefix(tokenizer.apply_chat_template([turn], tokenize=False), tokenizer.bos_token)
        for turn in (chosen, rejected)
    )
    return prompt_text, chosen_text, rejected_text


def truncate(
    prompt: list[int], chosen: list[int], rejected: list[int], settings: TruncationSettings, bos_id: int | None
) -> tuple[list[int], list[int], list[int]]:
    """Apply the reference truncation to token id lists (``keep_end`` keeps a leading BOS)."""
    longer = max(len(chosen), len(rejected))
    if len(prompt) + longer > settings.max_length:
        keep = settings.max_prompt_length
        if settings.truncation_mode == "keep_start":
            prompt = prompt[:keep]
        elif bos_id is not None and prompt and prompt[0] == bos_id:
            prompt = [bos_id, *prompt[len(prompt) - keep + 1 :]] if len(prompt) > keep else prompt
        else:
            prompt = prompt[-keep:]
    if len(prompt) + longer > settings.max_length:
        budget = settings.max_length - settings.max_prompt_length
        chosen, rejected = chosen[:budget], rejected[:budget]
    return prompt, chosen, rejected


def encode_pair(
    row: dict[str, Any], tokenizer: PreTrainedTokenizerBase, settings: TruncationSettings
) -> dict[str, list[int]]:
    """Token ids and labels of one pair.

    Returns:
        ``chosen_input_ids``, ``chosen_labels``, ``rejected_input_ids``, ``rejected_labels``: lists of
        equal length per response, labels set to ``IGNORE_INDEX`` on prompt positions.

    Raises:
        BadRowError: for rows the recipe cannot use (see ``split_turns``) or an empty response.
    """
    prompt_text, chosen_text, rejected_text = template_texts(tokenizer, *split_turns(row))
    prompt, chosen, rejected = (
        tokenizer(text, add_special_tokens=False)["input_ids"] for text in (prompt_text, chosen_text, rejected_text)
    )
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is not None and (not prompt or prompt[0] != bos):
        prompt = [bos, *prompt]
    if eos is not None:
        chosen, rejected = ([*ids, eos] if not ids or ids[-1] != eos else ids for ids in (chosen, rejected))
    prompt, chosen, rejected = truncate(prompt, chosen, rejected, settings, bos)
    if not chosen or not rejected:
        raise BadRowError("empty_response_after_truncation", "a response has no tokens left after truncation")
    out: dict[str, list[int]] = {}
    for name, response in (("chosen", chosen), ("rejected", rejected)):
        out[f"{name}_input_ids"] = prompt + response
        out[f"{name}_labels"] = [IGNORE_INDEX] * len(prompt) + response
    return out
