"""Turn preference rows into token ids exactly as the SimPO reference recipe does.

The recipe (see ``shared/reference/simpo-recipe.md``):

- prompt turns and the two assistant turns come from the row's layout (``data/layouts.py``);
- the prompt and response texts come from the chat template (``data/templating.py``): an empty system message
  goes first when the template mentions a system role; prompt text = template over the prompt turns (no
  generation prompt); each response text = template over the single assistant turn, with a leading BOS string
  removed, so the assistant header belongs to the response;
- tokenise with ``add_special_tokens=False``; the prompt starts with exactly one BOS (prepended only if
  missing), each response ends with EOS (appended only if missing); any other BOS is an error or, with
  ``data.bos_policy=fix``, dropped (``data/bos.py``);
- truncation: if prompt + longer response exceeds ``max_length``, cut the prompt to ``max_prompt_length``
  (``keep_end`` keeps its last tokens but, unlike the reference, keeps the BOS; ``keep_start`` its first);
  if still too long, cut each response to ``max_length - max_prompt_length`` (never to zero tokens).

``PairEncoder`` does this for a batch of rows (``datasets.map(batched=True)``) and records, per row, why it was
dropped, the BOS found and repaired, its lengths and whether it was truncated; ``encode_pair`` does one row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from transformers import PreTrainedTokenizerBase

from data.bos import check_policy, count_extra_bos, remove_extra_bos, texts_hold
from data.layouts import BAD_ROW_REASONS, BadRowError, Message, detect_row_layout, row_to_turns
from data.special_text import SPECIAL_TEXT_POLICIES, encode_escaped, found_in, special_strings
from data.templating import template_texts
from simpo.core.logprobs import IGNORE_INDEX
from simpo.core.value_checks import check_one_of, check_positive_int
from simpo.errors import UserError

TRUNCATION_MODES = ("keep_end", "keep_start")
TOKEN_COLUMNS = ["chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels"]
STAT_COLUMNS = {
    "drop_reason": "",
    "bos_extra": 0,
    "bos_in_text": False,
    "prompt_tokens": 0,
    "chosen_tokens": 0,
    "rejected_tokens": 0,
    "prompt_truncated": False,
    "response_truncated": False,
    "special_in_text": "",  # the special-token strings found in the row's message contents, space-separated
}

__all__ = ["BadRowError", "PairEncoder", "TruncationSettings", "encode_pair", "truncate"]


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
        check_positive_int("data.max_length", self.max_length)
        check_positive_int("data.max_prompt_length", self.max_prompt_length)
        if not self.max_prompt_length < self.max_length:
            raise UserError(
                f"data.max_prompt_length ({self.max_prompt_length}) must be positive and smaller than "
                f"data.max_length ({self.max_length}), or responses could be cut to nothing"
            )
        check_one_of("data.truncation_mode", self.truncation_mode, TRUNCATION_MODES)


def split_turns(row: dict[str, Any], layout: str | None = None) -> tuple[list[Message], Message, Message]:
    """(prompt turns, chosen turn, rejected turn) of a row; the layout is detected from the row when not given."""
    return row_to_turns(row, layout or detect_row_layout(row))


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


class PairEncoder:
    """Encode batches of rows (canonical ``prompt`` / ``chosen`` / ``rejected`` fields) into training pairs.

    Args:
        tokenizer: the policy's tokenizer, with a chat template.
        settings: truncation limits.
        layout: the data set's layout (``data/layouts.py``).
        bos_policy: ``error`` (offending rows are only flagged; the caller stops) or ``fix`` (repaired).
        special_text: special-token strings in message contents (``data/special_text.py``): ``refuse`` (rows are
            only flagged; the caller stops), ``escape`` (tokenised as plain text) or ``allow``.

    ``__call__`` returns, per row, the ``TOKEN_COLUMNS`` (empty lists for dropped rows) and the ``STAT_COLUMNS``.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        settings: TruncationSettings,
        layout: str,
        bos_policy: str = "error",
        special_text: str = "refuse",
    ) -> None:
        self.tokenizer = tokenizer
        self.settings = settings
        self.layout = layout
        self.bos_policy = check_policy(bos_policy)
        self.special_text = check_one_of("data.special_text", special_text, SPECIAL_TEXT_POLICIES)
        self.specials = special_strings(tokenizer)

    def assemble(self, prompt: list[int], chosen: list[int], rejected: list[int]) -> dict[str, Any]:
        """Ids of one pair from the tokenised texts: BOS/EOS rules, BOS check, truncation, labels."""
        bos, eos = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        stats: dict[str, Any] = {}
        if bos is not None:
            if not prompt or prompt[0] != bos:
                prompt = [bos, *prompt]
            stats["bos_extra"] = count_extra_bos(prompt, chosen, rejected, bos)
            if stats["bos_extra"] and self.bos_policy == "fix":
                prompt, chosen, rejected = remove_extra_bos(prompt, chosen, rejected, bos)
        if eos is not None:
            chosen, rejected = ([*ids, eos] if not ids or ids[-1] != eos else ids for ids in (chosen, rejected))
        stats.update(prompt_tokens=len(prompt), chosen_tokens=len(chosen), rejected_tokens=len(rejected))
        cut_prompt, cut_chosen, cut_rejected = truncate(prompt, chosen, rejected, self.settings, bos)
        if not cut_chosen or not cut_rejected:
            raise BadRowError("empty_response_after_truncation", "a response has no tokens left after truncation")
        stats["prompt_truncated"] = len(cut_prompt) < len(prompt)
        stats["response_truncated"] = len(cut_chosen) < len(chosen) or len(cut_rejected) < len(rejected)
        for name, response in (("chosen", cut_chosen), ("rejected", cut_rejected)):
            stats[f"{name}_input_ids"] = cut_prompt + response
            stats[f"{name}_labels"] = [IGNORE_INDEX] * len(cut_prompt) + response
        return stats

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        size = len(next(iter(batch.values())))
        out: dict[str, list[Any]] = {column: [[] for _ in range(size)] for column in TOKEN_COLUMNS}
        out.update({column: [default] * size for column, default in STAT_COLUMNS.items()})
        rows = [{field: values[i] for field, values in batch.items()} for i in range(size)]
        texts: list[str] = []
        positions: list[int] = []
        contents: dict[int, list[list[str]]] = {}  # rows holding special strings: each text's message contents
        for i, row in enumerate(rows):
            try:
                prompt, chosen, rejected = row_to_turns(row, self.layout)
                texts.extend(template_texts(self.tokenizer, prompt, chosen, rejected))
                positions.append(i)
            except BadRowError as error:
                out["drop_reason"][i] = error.reason
                continue
            parts = [[str(m.get("content") or "") for m in prompt], [str(chosen.get("content") or "")],
                     [str(rejected.get("content") or "")]]  # fmt: skip
            found = found_in([text for part in parts for text in part], self.specials)
            if found:
                out["special_in_text"][i] = " ".join(found)
                contents[i] = parts
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        for k, i in enumerate(positions):
            row_ids = ids[3 * k : 3 * k + 3]
            if i in contents and self.special_text == "escape":  # the contents as plain text, the template as is
                row_ids = [encode_escaped(self.tokenizer, texts[3 * k + j], contents[i][j]) for j in range(3)]
            try:
                pair = self.assemble(*row_ids)
            except BadRowError as error:
                out["drop_reason"][i] = error.reason
                continue
            for column, value in pair.items():
                out[column][i] = value
            if pair.get("bos_extra"):
                out["bos_in_text"][i] = texts_hold(rows[i], self.tokenizer.bos_token)
        return out


def encode_pair(
    row: dict[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    settings: TruncationSettings,
    layout: str | None = None,
    bos_policy: str = "error",
) -> dict[str, list[int]]:
    """Token ids and labels of one pair.

    Args:
        row: a row with ``prompt`` / ``chosen`` / ``rejected`` fields (any layout; detected when not given).
        bos_policy: ``error`` raises on a second BOS; ``fix`` drops it.

    Returns:
        ``chosen_input_ids``, ``chosen_labels``, ``rejected_input_ids``, ``rejected_labels``: lists of
        equal length per response, labels set to ``IGNORE_INDEX`` on prompt positions.

    Raises:
        BadRowError: for rows the recipe cannot use (see ``data/layouts.py``) or an empty response.
        ValueError: a second BOS under ``bos_policy=error``.
    """
    encoder = PairEncoder(tokenizer, settings, layout or detect_row_layout(row), bos_policy)
    out = encoder({field: [value] for field, value in row.items()})
    if out["drop_reason"][0]:
        reason = out["drop_reason"][0]
        raise BadRowError(reason, BAD_ROW_REASONS[reason])
    if out["bos_extra"][0] and bos_policy == "error":
        raise UserError(
            f"the pair holds {out['bos_extra'][0]} BOS tokens besides the leading one: set data.bos_policy=fix"
        )
    return {column: out[column][0] for column in TOKEN_COLUMNS}
