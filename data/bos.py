"""Single BOS: every training sequence starts with exactly one BOS token and holds no other.

The check runs on token ids, not on text: a BOS can come from the chat template (written twice), from data whose
messages already hold a rendered template, or from a tokenizer that adds one itself. ``data.bos_policy``:

- ``error`` (default): setup stops; ``diagnose`` names the cause, shows one offending row and the setting to change;
- ``fix``: ``remove_extra_bos`` keeps the one leading BOS and drops every other; the report counts the repairs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from data.templating import template_texts
from simpo.errors import UserError

BOS_POLICIES = ("error", "fix")
PROBE = [{"role": "user", "content": "Hello."}], {"role": "assistant", "content": "Hi."}


def check_policy(policy: str) -> str:
    """Validate ``data.bos_policy``."""
    if policy not in BOS_POLICIES:
        raise UserError(f"data.bos_policy must be one of {list(BOS_POLICIES)}, not {policy!r}")
    return policy


def count_extra_bos(prompt: Sequence[int], chosen: Sequence[int], rejected: Sequence[int], bos_id: int) -> int:
    """BOS tokens besides the prompt's leading one (0 for a clean pair whose prompt starts with BOS)."""
    leading = 1 if prompt and prompt[0] == bos_id else 0
    return list(prompt[leading:]).count(bos_id) + list(chosen).count(bos_id) + list(rejected).count(bos_id)


def remove_extra_bos(
    prompt: list[int], chosen: list[int], rejected: list[int], bos_id: int
) -> tuple[list[int], list[int], list[int]]:
    """Keep exactly one BOS, leading the prompt; drop every other BOS token."""
    return (
        [bos_id, *(t for t in prompt if t != bos_id)],
        [t for t in chosen if t != bos_id],
        [t for t in rejected if t != bos_id],
    )


def has_single_bos(sequence: Sequence[int], bos_id: int) -> bool:
    """Whether ``sequence`` starts with BOS and holds no other."""
    return bool(sequence) and sequence[0] == bos_id and list(sequence).count(bos_id) == 1


def texts_hold(row: Mapping[str, Any], needle: str) -> bool:
    """Whether any text of a row (plain fields or message contents) contains ``needle``."""

    def walk(value: Any) -> bool:
        if isinstance(value, str):
            return needle in value
        if isinstance(value, Mapping):
            return any(walk(v) for v in value.values())
        if isinstance(value, list):
            return any(walk(v) for v in value)
        return False

    return walk(dict(row))


def template_bos_count(tokenizer: PreTrainedTokenizerBase) -> int:
    """BOS tokens in the recipe's sequence for a clean one-turn probe (1 when the template is sound)."""
    prompt_text, response_text, _ = template_texts(tokenizer, PROBE[0], PROBE[1], {**PROBE[1], "content": "No."})
    ids = tokenizer([prompt_text, response_text], add_special_tokens=False)["input_ids"]
    return ids[0].count(tokenizer.bos_token_id) + ids[1].count(tokenizer.bos_token_id)


def diagnose(
    tokenizer: PreTrainedTokenizerBase,
    split: str,
    read: int,
    offending: Sequence[int],
    with_text: Sequence[int],
    example_row: Mapping[str, Any],
    example_ids: Sequence[int],
) -> str:
    """The error message for rows that break the single-BOS rule.

    Args:
        tokenizer: the tokenizer (with its chat template) the data was tokenised with.
        split: the split's name.
        read: rows read.
        offending: indices of the rows whose sequences hold more than one BOS.
        with_text: indices of the offending rows whose text holds the BOS string (a rendered template).
        example_row: the first offending row, as read.
        example_ids: its chosen sequence's first token ids.
    """
    bos, bos_id = tokenizer.bos_token, tokenizer.bos_token_id
    probe = template_bos_count(tokenizer)
    if probe > 1:
        cause = (
            f"the chat template already writes {bos} and writes it again ({probe} BOS tokens for a one-turn "
            f"conversation: a literal {bos} besides {{{{ bos_token }}}}, or one per message)"
        )
        fix = (
            "set data.chat_template to a template that writes the BOS once (bundled: llama3, mistral, gemma2), "
            "or data.bos_policy=fix to keep only the leading BOS"
        )
    elif with_text:
        cause = (
            f"{len(with_text)} rows contain a rendered template in their text (their messages hold {bos!r}, "
            "which tokenises to a second BOS)"
        )
        fix = (
            "clean those rows (messages should hold plain text, not templated conversations), or set "
            "data.bos_policy=fix to drop the extra BOS tokens (data_report.json counts the repairs)"
        )
    else:
        cause = f"the tokenised sequences hold BOS id {bos_id} besides the leading one"
        fix = "set data.bos_policy=fix to drop the extra BOS tokens (data_report.json counts the repairs)"
    shown = json.dumps(dict(example_row), ensure_ascii=False, default=str)
    shown = shown if len(shown) <= 400 else shown[:400] + "..."
    tokens = tokenizer.convert_ids_to_tokens(list(example_ids[:16]))
    return (
        f"single BOS: {len(offending)} of {read} rows of split {split!r} do not start with exactly one BOS "
        f"{bos!r} (id {bos_id}) and hold no other. Cause: {cause}. Example: row {offending[0]}: {shown}; its "
        f"sequence starts {tokens}. Fix: {fix}."
    )
