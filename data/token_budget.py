"""Micro-batches filled by a token budget (``data.max_tokens_per_batch``) instead of a fixed number of pairs.

A micro-batch costs the token positions its layout lays out, padding included, as ``PreferenceCollator`` will build
it (``laid_out_shape``: R rows x T tokens): ``padded`` 2P rows x the longest sequence, ``shared_prompt`` P rows x the
longest pair row, the packed layouts their first-fit rows x the fullest row (about the real tokens). The plan:

1. every pair alone must fit the budget (else a ``ValueError`` naming ``data.max_tokens_per_batch``, raised when the
   data is loaded, before a run writes anything);
2. pairs sorted by their own cost, longest first (equal costs in an order drawn from the seed), are taken in that
   order, each micro-batch as many as fit (so a micro-batch holds pairs of similar lengths and little padding);
3. ``equal_share`` splits the largest micro-batches until every process gets as many (DDP and FSDP synchronise
   every micro-batch); the epoch's order of micro-batches is then drawn from ``(seed, epoch)``
   (``data.resumable_loader.TokenBudgetSampler``).

The micro-batches themselves depend on the seed, not on the epoch: the loss is a sum over independent pairs, so only
which micro-batches share an optimizer step (a new draw each epoch) shapes a step's gradient, and every epoch has
the same number of micro-batches (Lightning reads it once, for the schedule).
"""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from data.collate import PreferenceCollator
from simpo.core.logprobs import IGNORE_INDEX
from simpo.errors import UserError

KEY = "data.max_tokens_per_batch"


def pair_lengths(pairs: datasets.Dataset) -> np.ndarray:
    """(N, 3) int64: chosen length, rejected length and prompt length (unlabelled tokens) of each tokenised pair.

    Args:
        pairs: a ``datasets.Dataset`` with ``chosen_input_ids``, ``rejected_input_ids`` and ``chosen_labels``
            (read as Arrow columns, without turning 2N token lists into Python lists).
    """
    table = pairs.select_columns(["chosen_input_ids", "rejected_input_ids"]).with_format("arrow")[:]
    chosen = pc.list_value_length(table.column("chosen_input_ids")).to_numpy()
    rejected = pc.list_value_length(table.column("rejected_input_ids")).to_numpy()
    return np.stack([chosen, rejected, unlabelled_counts(pairs, "chosen_labels")], axis=1).astype(np.int64)


def unlabelled_counts(pairs: datasets.Dataset, column: str) -> np.ndarray:
    """(N,) int64: the unlabelled tokens (the prompt) of each row's ``column`` labels, read as one Arrow column."""
    chunks = pairs.select_columns([column]).with_format("arrow")[:].column(column).chunks
    labels = pa.chunked_array(chunks).combine_chunks()
    unlabelled = pc.equal(labels.flatten(), IGNORE_INDEX).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = labels.offsets.to_numpy()
    return np.add.reduceat(np.append(unlabelled, 0), offsets[:-1]) if len(labels) else np.zeros(0, np.int64)


class TokenBudget:
    """The cost of a micro-batch in ``collator``'s layout, and whether it fits ``max_tokens``.

    Args:
        max_tokens: ``data.max_tokens_per_batch``.
        collator: the collator that will build the batches (its layout, pack length and padding multiple).
        lengths: (N, 3) from ``pair_lengths``.
        added: (N, 3) the same lengths of a pair the collator appends to the batch for each pair (KTO's mismatched
            pseudo-pair: ``added_pair_lengths`` of the collator that runs), or ``None``; they are counted too.
    """

    def __init__(
        self, max_tokens: int, collator: PreferenceCollator, lengths: np.ndarray, added: np.ndarray | None = None
    ) -> None:
        self.max_tokens = max_tokens
        self.collator = collator
        self.lengths = lengths
        self.added = added

    def units(self, pairs: list[int]) -> list[int]:
        """The unit lengths of ``pairs`` (indices) in the collator's layout (``PreferenceCollator.unit_lengths``),
        followed by those of the pairs added for them, in the order the collator lays them out."""
        rows = self.lengths[pairs]
        if self.added is not None:
            rows = np.concatenate([rows, self.added[pairs]])
        if self.collator.layout.startswith("shared_prompt"):
            return (rows[:, 0] + rows[:, 1] - rows[:, 2]).tolist()
        return rows[:, 0].tolist() + rows[:, 1].tolist()

    def cost(self, pairs: list[int]) -> int:
        """Token positions (rows x row length, padding included) of the batch of ``pairs``."""
        rows, width = self.collator.laid_out_shape(self.units(pairs))
        return rows * width

    def fits(self, pairs: list[int]) -> bool:
        return self.cost(pairs) <= self.max_tokens


def plan_micro_batches(budget: TokenBudget, seed: int) -> list[list[int]]:
    """Micro-batches (lists of pair indices, every pair exactly once) each within the budget (see the module).

    Raises:
        ValueError: a pair that alone costs more than the budget, naming ``data.max_tokens_per_batch``.
    """
    n = len(budget.lengths)
    single = np.array([budget.cost([i]) for i in range(n)], dtype=np.int64)
    if n and single.max() > budget.max_tokens:
        worst = int(single.argmax())
        chosen, rejected, prompt = budget.lengths[worst].tolist()
        added = " and the pair added for it (KTO's mismatched pseudo-pair)" if budget.added is not None else ""
        raise UserError(
            f"{KEY}={budget.max_tokens} is smaller than pair {worst}{added} alone: {single[worst]} token positions in "
            f"the {budget.collator.layout} layout (chosen {chosen}, rejected {rejected} tokens, prompt {prompt}); "
            f"{int((single > budget.max_tokens).sum())} pair(s) exceed it. Raise {KEY} to at least "
            f"{int(single.max())}, or lower data.max_length"
        )
    tie_break = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    order = np.lexsort((tie_break, -single)).tolist()  # longest first, equal costs in a seeded order
    batches: list[list[int]] = []
    start = 0
    while start < n:
        size = _largest_fitting_prefix(budget, order, start)
        batches.append(order[start : start + size])
        start += size
    return batches


def _largest_fitting_prefix(budget: TokenBudget, order: list[int], start: int) -> int:
    """How many pairs from ``order[start:]`` fit together (at least 1): doubling, then bisection, so a micro-batch
    of n pairs costs O(log n) layout evaluations."""
    left = len(order) - start
    good, bad = 1, None
    while bad is None:
        trial = min(2 * good, left)
        if trial == good:
            return good
        if budget.fits(order[start : start + trial]):
            good = trial
        else:
            bad = trial
    while bad - good > 1:
        middle = (good + bad) // 2
        if budget.fits(order[start : start + middle]):
            good = middle
        else:
            bad = middle
    return good


def equal_share(batches: list[list[int]], processes: int, budget: TokenBudget | None = None) -> list[list[int]]:
    """``batches`` made a multiple of ``processes`` in number: the micro-batch with the most pairs is split in two
    (each half re-checked against ``budget``) until the count divides; when every micro-batch holds one pair and it
    still does not, the first micro-batches are repeated (as ``DistributedSampler`` pads), the only case where a
    pair is seen twice in an epoch."""
    batches = [list(b) for b in batches]
    while len(batches) % processes:
        largest = max(range(len(batches)), key=lambda i: len(batches[i]))
        if len(batches[largest]) < 2:
            return batches + batches[: (-len(batches)) % processes]
        batch = batches.pop(largest)
        halves = [batch[: len(batch) // 2], batch[len(batch) // 2 :]]
        batches[largest:largest] = [part for half in halves for part in _split_to_fit(half, budget)]
    return batches


def _split_to_fit(batch: list[int], budget: TokenBudget | None) -> list[list[int]]:
    """``batch``, halved again while it does not fit (first-fit packing is not monotone: a subset of a fitting
    micro-batch may, rarely, need one row more)."""
    if budget is None or len(batch) < 2 or budget.fits(batch):
        return [batch]
    middle = len(batch) // 2
    return _split_to_fit(batch[:middle], budget) + _split_to_fit(batch[middle:], budget)


def describe(batches: list[list[int]], budget: TokenBudget) -> str:
    """One log line: how many micro-batches, their pairs and how full they are."""
    pairs = np.array([len(b) for b in batches])
    fill = np.array([budget.cost(b) for b in batches]).mean() / budget.max_tokens if batches else 0.0
    return (
        f"{KEY}={budget.max_tokens} ({budget.collator.layout}): {len(batches)} micro-batches of {pairs.mean():.1f} "
        f"pairs on average ({pairs.min()}-{pairs.max()}), {fill:.0%} of the budget used"
    )
