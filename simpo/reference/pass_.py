"""The one no-grad pass of the reference over the training and validation pairs that fills a ``ReferenceTable``.

Every process scores an equal share of the pairs (the shares are padded to the same number of batches, so sharded
models run the same collectives everywhere) and the shares are gathered on every process.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import datasets
import torch
import torch.distributed as dist

from simpo.core.logprobs import SequenceLogps
from simpo.reference.keys import pair_key

log = logging.getLogger(__name__)
NAN = float("nan")


def unique_pairs(splits: Iterable[datasets.Dataset]) -> list[tuple[int, int]]:
    """(split, row) of every distinct pair (by content key) of ``splits``, in order."""
    seen: set[int] = set()
    out = []
    for s, split in enumerate(splits):
        for row, (c, r) in enumerate(zip(split["chosen_input_ids"], split["rejected_input_ids"], strict=True)):
            key = pair_key(c, r)
            if key not in seen:
                seen.add(key)
                out.append((s, row))
    return out


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def reference_rows(
    stats_fn: Callable[[dict[str, Any]], SequenceLogps],
    splits: list[datasets.Dataset],
    collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
    batch_size: int,
    device: torch.device,
    rank: int = 0,
    world: int = 1,
) -> dict[int, list[float]]:
    """Reference log-prob sums of every distinct pair of ``splits``, on every process.

    Args:
        stats_fn: per-sequence statistics of a collated batch under the reference (2 x ``num_pairs`` sequences).
        splits: the tokenised splits.
        collate: a ``ReferenceCollator`` (``pair_keys``, and KTO's ``num_kl_pairs`` pseudo-pairs).
        batch_size: pairs per forward.
        device: where the batches go.
        rank, world: this process's share.

    Returns:
        ``{pair key: [chosen, rejected, kl_chosen, kl_rejected]}`` (NaN for KL values without KTO).
    """
    todo = unique_pairs(splits)
    share = todo[rank::world]
    batches = math.ceil(math.ceil(len(todo) / world) / batch_size)
    found: dict[int, list[float]] = {}
    start, last_log = time.monotonic(), 0.0
    for b in range(batches):
        chunk = share[b * batch_size : (b + 1) * batch_size] or share[-1:] or todo[:1]  # pad: same batch count
        batch = _to_device(collate([splits[s][row] for s, row in chunk]), device)
        n, k = int(batch["num_pairs"]), int(batch.get("num_kl_pairs", 0))
        stats = stats_fn(batch)
        sums = stats.logp_sum.double().cpu()
        p = n - k
        for i, key in enumerate(batch["pair_keys"].tolist()):
            kl = [float(sums[p + i]), float(sums[n + p + i])] if k else [NAN, NAN]
            found[int(key)] = [float(sums[i]), float(sums[n + i]), *kl]
        now = time.monotonic()
        if rank == 0 and (now - last_log > 30 or b == batches - 1):
            last_log = now
            log.info("reference pass: %d/%d batches on each of %d process(es), %.0f s", b + 1, batches, world,
                     now - start)  # fmt: skip
    if world > 1 and dist.is_available() and dist.is_initialized():
        gathered: list[dict[int, list[float]] | None] = [None] * world
        dist.all_gather_object(gathered, found)
        for part in gathered:
            found.update(part or {})
    return found
