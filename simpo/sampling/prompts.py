"""The prompts to sample from: read with the data layer, deduplicated, given stable ids, sorted, and turned into
token ids that start with exactly one BOS.

A prompt row's ``prompts.column`` holds either a text (one user turn) or a list of ``{role, content}`` messages
ending with the user's turn. Its id is the SHA-256 of that text (UltraFeedback's ``prompt_id``) or of the messages'
JSON, so the same prompt has the same id in every data set and every run; duplicates (same id) are kept once. The
prompts are sorted by id: the order, and so the shards, do not depend on the data set's row order.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from data.bos import has_single_bos
from data.layouts import Message
from data.sources import load_split
from data.templating import require_chat_template
from simpo.errors import UserError

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Prompt:
    """One prompt: ``prompt_id`` (hex SHA-256) and its ``turns`` (messages, the last one the user's)."""

    prompt_id: str
    turns: list[Message]

    @property
    def text(self) -> str:
        """The last user turn (the ``prompt`` field of the UltraFeedback layout)."""
        return self.turns[-1]["content"]


@dataclass(frozen=True)
class PromptSet:
    """The prompts of a run and how they were read.

    Attributes:
        prompts: unique prompts sorted by id (``prompts.limit`` applied).
        rows_read: rows of the split.
        duplicates: rows whose prompt an earlier row already had.
        unusable: rows without a usable prompt (null, blank, not text or messages ending with the user's turn).
        fingerprint: SHA-256 over the ids in order (the manifest compares it across reruns).
    """

    prompts: list[Prompt]
    rows_read: int
    duplicates: int
    unusable: int
    fingerprint: str


def prompt_turns(value: Any) -> list[Message] | None:
    """The turns of a prompt cell, or ``None`` when it is no usable prompt."""
    if isinstance(value, str):
        return [{"role": "user", "content": value.strip()}] if value.strip() else None
    if not isinstance(value, list) or not value:
        return None
    turns = []
    for message in value:
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return None
        content = message.get("content")
        if not isinstance(content, str) or (message["role"] != "system" and not content.strip()):
            return None
        turns.append({"role": message["role"], "content": content})
    return turns if turns[-1]["role"] == "user" else None


def prompt_id(turns: list[Message]) -> str:
    """SHA-256 of the prompt: of its text for a single user turn (as UltraFeedback's ``prompt_id``), else of the
    messages' JSON."""
    single = len(turns) == 1 and turns[0]["role"] == "user"
    key = turns[0]["content"] if single else json.dumps(turns, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()


def load_prompts(dataset: str, split: str, column: str, limit: int | None = None) -> PromptSet:
    """Read, deduplicate and sort the prompts of ``split`` of ``dataset`` (anything ``data.sources`` reads).

    Raises:
        ValueError: no column ``column`` (names ``prompts.column`` and lists the columns), or no usable prompt.
        FileNotFoundError: a local ``dataset`` that does not exist (``data.sources`` names it).
    """
    try:
        rows = load_split(dataset, split).rows
    except (ValueError, FileNotFoundError) as error:  # data.sources names data.dataset; here it is prompts.*
        message = str(error).replace("data.dataset", "prompts.dataset").replace("data.train_split", "prompts.split")
        raise type(error)(message.replace(" / data.test_split", "")) from None
    if column not in rows.column_names:
        raise UserError(
            f"prompts.column={column}: the split {split!r} of prompts.dataset={dataset} has no such column (its "
            f"columns: {rows.column_names}); set prompts.column to the column holding the prompt text or messages"
        )
    unique: dict[str, Prompt] = {}
    unusable = 0
    for value in rows[column]:
        turns = prompt_turns(value)
        if turns is None:
            unusable += 1
            continue
        unique.setdefault(prompt_id(turns), Prompt(prompt_id(turns), turns))
    if not unique:
        raise UserError(
            f"prompts.column={column} of prompts.dataset={dataset} (split {split!r}) holds no usable prompt: each "
            "must be a non-blank text or a list of {role, content} messages ending with the user's turn"
        )
    prompts = sorted(unique.values(), key=lambda p: p.prompt_id)[:limit]
    fingerprint = hashlib.sha256("\n".join(p.prompt_id for p in prompts).encode()).hexdigest()
    duplicates = len(rows) - unusable - len(unique)
    return PromptSet(prompts, len(rows), duplicates, unusable, fingerprint)


def prompt_token_ids(tokenizer: PreTrainedTokenizerBase, prompts: list[Prompt]) -> list[list[int]]:
    """Token ids of each prompt in the policy's chat template with the generation prompt, starting with exactly
    one BOS and holding no other (``data.bos``): an engine receives these ids, never a text it tokenises again.

    A BOS is prepended only when the template does not write one. Returns one list of ids per prompt.

    Raises:
        ValueError: the tokenizer has no chat template, or a prompt holds a second BOS (its text already contains a
            rendered template, or the template writes BOS twice); names the prompt and ``prompts.dataset``.
    """
    require_chat_template(tokenizer)
    if not prompts:
        return []
    texts = [tokenizer.apply_chat_template(p.turns, add_generation_prompt=True, tokenize=False) for p in prompts]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is None:
        return [list(ids) for ids in encoded]
    result = [list(ids) if ids and ids[0] == bos else [bos, *ids] for ids in encoded]
    bad = [i for i, ids in enumerate(result) if not has_single_bos(ids, bos)]
    if bad:
        first = prompts[bad[0]]
        raise UserError(
            f"single BOS: {len(bad)} of {len(prompts)} prompts of prompts.dataset hold more than one BOS "
            f"{tokenizer.bos_token!r} (id {bos}) once templated, e.g. prompt {first.prompt_id[:12]} "
            f"({first.text[:80]!r}, {result[bad[0]].count(bos)} BOS). Their text probably already holds a rendered "
            "chat template: give plain text (or set generate.chat_template to a template that writes BOS once)"
        )
    return result
