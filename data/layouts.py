"""Row layouts of preference data sets: detect them, map column names, and turn a row into chat turns.

Three layouts are understood (``prompt`` / ``chosen`` / ``rejected`` after ``data.columns`` renaming):

- ``ultrafeedback`` (UltraFeedback-binarized): ``prompt`` a string (or absent), ``chosen`` and ``rejected`` whole
  conversations (lists of ``{role, content}`` messages) ending with the assistant's turn; the prompt turns are
  ``chosen[:-1]``, which must equal ``rejected[:-1]`` (when both hold only the assistant's turn, the ``prompt``
  text is the user turn);
- ``trl`` (TRL's conversational preference layout): ``prompt``, ``chosen`` and ``rejected`` each a message list;
  the prompt turns are ``prompt`` and the responses the last turns of ``chosen`` / ``rejected``;
- ``strings``: ``chosen`` and ``rejected`` plain texts (each becomes the assistant's turn) and ``prompt`` a text
  (one user turn) or a message list.

A row that cannot become a pair raises ``BadRowError`` with one of ``BAD_ROW_REASONS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import datasets

from simpo.errors import UserError

Message = dict[str, str]

FIELDS = ("prompt", "chosen", "rejected")
LAYOUTS = ("ultrafeedback", "trl", "strings")
ROLES = frozenset({"system", "user", "assistant"})

BAD_ROW_REASONS = {
    "missing_field": "a field the layout needs is missing or null",
    "not_message_list": "a field that must be a list of {role, content} messages is not one (or is empty)",
    "unknown_role": "a message has a role other than system, user, assistant",
    "last_turn_not_assistant": "the last turn of chosen or rejected is not the assistant's",
    "non_string_content": "a message's content (or a plain-text field) is not a string",
    "blank_content": "a user or assistant message (or a plain-text field) is blank",
    "empty_prompt": "the row has no prompt turns",
    "prompts_differ": "chosen and rejected continue different conversations (chosen[:-1] != rejected[:-1])",
    "chosen_equals_rejected": "the chosen and rejected responses are the same text",
    "empty_response_after_truncation": "a response has no tokens left after truncation",
}


class BadRowError(UserError):
    """A row that cannot become a training pair; ``reason`` is a key of ``BAD_ROW_REASONS``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def resolve_columns(column_names: list[str], columns: Mapping[str, str] | None) -> dict[str, str]:
    """Map ``prompt`` / ``chosen`` / ``rejected`` to the data set's column names.

    Args:
        column_names: the columns the data set has.
        columns: ``data.columns``, e.g. ``{prompt: question, chosen: good, rejected: bad}``; unmapped fields keep
            their own names.

    Returns:
        ``{field: column}`` for the fields present (``prompt`` may be absent; ``chosen`` and ``rejected`` not).

    Raises:
        ValueError: an unknown field in ``data.columns``, a mapped column that does not exist, or no
            ``chosen`` / ``rejected`` column.
    """
    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(FIELDS))
    if unknown:
        raise UserError(f"data.columns maps {unknown}: only {list(FIELDS)} can be mapped")
    resolved = {}
    for field in FIELDS:
        name = columns.get(field, field)
        if name in column_names:
            resolved[field] = name
        elif field in columns or field != "prompt":
            raise UserError(
                f"the data set has no column {name!r} for {field!r} (its columns: {column_names}): "
                f"set data.columns, e.g. data.columns={{prompt: question, chosen: good, rejected: bad}}"
            )
    return resolved


def _feature_kind(feature: Any) -> str:
    """``text``, ``messages`` or ``unknown`` for a ``datasets`` feature."""
    if isinstance(feature, datasets.Value):
        return "text" if feature.dtype in ("string", "large_string") else "unknown"
    if isinstance(feature, (datasets.List, datasets.LargeList, datasets.Sequence)):
        inner = feature.feature
        return "messages" if isinstance(inner, dict) and {"role", "content"} <= set(inner) else "unknown"
    return "unknown"


def _value_kind(value: Any) -> str:
    if isinstance(value, str):
        return "text"
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        return "messages"
    return "unknown"


def layout_of(prompt_kind: str, chosen_kind: str, rejected_kind: str) -> str | None:
    """The layout named by the kinds (``text`` / ``messages`` / ``absent``) of the three fields, or ``None``."""
    if chosen_kind == rejected_kind == "text" and prompt_kind in ("text", "messages"):
        return "strings"
    if chosen_kind == rejected_kind == "messages":
        return "trl" if prompt_kind == "messages" else "ultrafeedback" if prompt_kind in ("text", "absent") else None
    return None


def detect_layout(rows: datasets.Dataset, columns: Mapping[str, str]) -> str:
    """The layout of a data set (renamed by ``columns``), from its features or else its first non-null values.

    Raises:
        ValueError: when the columns fit no layout (the message names the kinds found and ``data.columns``).
    """
    kinds = {}
    for field in FIELDS:
        if field not in columns:
            kinds[field] = "absent"
            continue
        kind = _feature_kind(rows.features[columns[field]])
        if kind == "unknown":  # e.g. a null-typed column, or a loader that left the type open: look at values
            values = (v for v in rows.select(range(min(len(rows), 100)))[columns[field]] if v is not None)
            first = next(values, None)
            kind = _value_kind(first) if first is not None else "null in the first 100 rows"
        kinds[field] = kind
    layout = layout_of(kinds["prompt"], kinds["chosen"], kinds["rejected"])
    if layout is None:
        found = ", ".join(f"{field}={columns.get(field, '-')} ({kind})" for field, kind in kinds.items())
        raise UserError(
            f"cannot tell the layout of the data set from its columns ({found}): expected UltraFeedback-binarized "
            "(prompt text, chosen/rejected message lists), TRL-style (prompt/chosen/rejected message lists) or "
            "plain strings (prompt/chosen/rejected texts); set data.columns to the right columns"
        )
    return layout


def _messages(value: Any, field: str) -> list[Message]:
    """Validate a message list: dicts with a known role and string content (blank allowed for system only)."""
    if value is None:
        raise BadRowError("missing_field", f"'{field}' is null")
    if not isinstance(value, list) or not value or not all(isinstance(m, dict) for m in value):
        raise BadRowError("not_message_list", f"'{field}' must be a non-empty list of {{role, content}} messages")
    for position, message in enumerate(value):
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise BadRowError("unknown_role", f"'{field}'[{position}] has role {role!r}; known: {sorted(ROLES)}")
        if not isinstance(content, str):
            raise BadRowError("non_string_content", f"'{field}'[{position}] content is {type(content).__name__}")
        if role != "system" and not content.strip():
            raise BadRowError("blank_content", f"'{field}'[{position}] ({role}) is blank")
    return value


def _text(value: Any, field: str) -> str:
    if value is None:
        raise BadRowError("missing_field", f"'{field}' is null")
    if not isinstance(value, str):
        raise BadRowError("non_string_content", f"'{field}' must be a string, not {type(value).__name__}")
    if not value.strip():
        raise BadRowError("blank_content", f"'{field}' is blank")
    return value


def row_to_turns(row: Mapping[str, Any], layout: str) -> tuple[list[Message], Message, Message]:
    """(prompt turns, chosen assistant turn, rejected assistant turn) of a row with canonical field names.

    Raises:
        BadRowError: the row cannot be a training pair (see ``BAD_ROW_REASONS``).
    """
    for field in ("chosen", "rejected") if layout == "ultrafeedback" else FIELDS:
        if row.get(field) is None:
            raise BadRowError("missing_field", f"'{field}' is missing or null")
    if layout == "strings":
        prompt = row["prompt"]
        turns = (
            _messages(prompt, "prompt")
            if isinstance(prompt, list)
            else [{"role": "user", "content": _text(prompt, "prompt")}]
        )
        chosen = {"role": "assistant", "content": _text(row["chosen"], "chosen")}
        rejected = {"role": "assistant", "content": _text(row["rejected"], "rejected")}
    else:
        conversations = {field: _messages(row[field], field) for field in ("chosen", "rejected")}
        for field, conversation in conversations.items():
            if conversation[-1]["role"] != "assistant":
                raise BadRowError(
                    "last_turn_not_assistant", f"the last turn of '{field}' is {conversation[-1]['role']}"
                )
        chosen, rejected = conversations["chosen"][-1], conversations["rejected"][-1]
        if layout == "trl":
            turns = _messages(row["prompt"], "prompt")
        else:
            turns = conversations["chosen"][:-1]
            if _strip_turns(turns) != _strip_turns(conversations["rejected"][:-1]):
                raise BadRowError("prompts_differ", "chosen[:-1] and rejected[:-1] differ")
            if not turns and isinstance(row.get("prompt"), str):  # responses without their prompt turns
                turns = [{"role": "user", "content": _text(row["prompt"], "prompt")}]
    if not turns or all(turn["role"] == "system" for turn in turns):
        raise BadRowError("empty_prompt", "the row has no user or assistant prompt turn")
    if chosen["content"].strip() == rejected["content"].strip():
        raise BadRowError("chosen_equals_rejected", "the chosen and rejected responses are the same text")
    return list(turns), chosen, rejected


def _strip_turns(turns: list[Message]) -> list[tuple[str, str]]:
    return [(turn["role"], turn["content"].strip()) for turn in turns]


def detect_row_layout(row: Mapping[str, Any]) -> str:
    """The layout of a single row (for ``encode_pair`` on one row); ``ultrafeedback`` when undecidable."""
    kinds = [_value_kind(row.get(field)) if row.get(field) is not None else "absent" for field in FIELDS]
    return layout_of(*kinds) or "ultrafeedback"
