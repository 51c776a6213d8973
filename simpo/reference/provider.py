"""Where the reference log-probs of a batch come from, one class per ``reference=`` mode.

Each provider gives, for a collated batch of n = P + K pairs (P real, K of KTO's mismatched pseudo-pairs), the
reference's summed log-probs of its 2n sequences in the batch's order (chosen of pair i = i, rejected = n + i),
via ``sums(batch)``; ``prepare(placement)`` runs once the policy is placed (and sharded), with what the caller knows
of it (``ReferencePlacement``): the providers know nothing of Lightning, a trainer or a data module.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
import torch.distributed as dist
from transformers import PreTrainedModel

from simpo.core.rng import rng_states, set_rng_states
from simpo.reference.pass_ import reference_rows
from simpo.reference.table import ReferenceTable, tables_with_meta
from simpo.scoring import Scorer

log = logging.getLogger(__name__)
ModelFactory = Callable[[], PreTrainedModel]


@dataclass
class ReferencePlacement:
    """Where the policy runs, given by the caller (the LightningModule, or ``evaluate.py``) to ``prepare``.

    Args:
        scorer: the policy's scoring forward and head settings; a reference is scored the same way.
        policy: the policy, placed (and sharded) where it runs.
        place: puts a frozen reference model where the policy is: on its device, or sharded like it under FSDP.
        device: the policy's device (batches are there).
        policy_is_initial: the policy still holds its initial weights (a fresh run before its first step and before
            any checkpoint is loaded), so it can serve as its own reference.
        rank, world: this process's share of a reference pass.
        forward_context: the precision context the policy's forward runs in (mixed precision's autocast).
        is_writer: this process writes the cached table (global rank 0).
    """

    scorer: Scorer
    policy: PreTrainedModel
    place: Callable[[PreTrainedModel], None]
    device: torch.device
    policy_is_initial: bool = False
    rank: int = 0
    world: int = 1
    forward_context: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext
    is_writer: bool = True


@dataclass
class ReferenceData:
    """The pairs a cached table covers and how its pass batches them.

    Args:
        splits: the tokenised training and validation splits.
        collate: the collator the run's loaders use (a ``ReferenceCollator``: ``pair_keys``, KTO's pseudo-pairs).
        batch_size: pairs per forward of the pass.
    """

    splits: list[datasets.Dataset]
    collate: Callable[[list[dict[str, Any]]], dict[str, Any]]
    batch_size: int


def _frozen(model: PreTrainedModel) -> PreTrainedModel:
    model.eval()
    model.requires_grad_(False)
    return model


def build_reference_model(placement: ReferencePlacement, factory: ModelFactory) -> PreTrainedModel:
    """The reference from ``factory``, frozen, with the policy's labelled-only head, where the policy is (sharded like
    the policy under FSDP). The global RNG streams are left as they were, so training draws the same numbers."""
    states = rng_states()
    try:
        model = _frozen(factory())
    finally:
        set_rng_states(states)
    placement.scorer.attach(model)
    placement.place(model)
    return model


class ModelReference:
    """``reference=model``: a frozen copy of the reference beside the policy, run without gradients on each batch."""

    mode = "model"
    identity: dict[str, Any] | None = None  # which weights serve as the reference (set by ``build_reference``)

    def __init__(self, factory: ModelFactory) -> None:
        self.factory = factory
        self.model: PreTrainedModel | None = None
        self.scorer: Scorer | None = None

    def prepare(self, placement: ReferencePlacement) -> None:
        if self.model is None:
            self.model = build_reference_model(placement, self.factory)
            self.scorer = placement.scorer
            log.info("reference=model: a frozen reference copy is held beside the policy")

    @torch.no_grad()
    def sums(self, batch: dict[str, Any]) -> torch.Tensor:
        """(2n,) reference log-prob sums of the batch's sequences."""
        assert self.model is not None and self.scorer is not None, "prepare() first"
        return self.scorer.sequence_stats(self.model, batch).logp_sum


class AdapterOffReference:
    """``reference=adapter_off`` (LoRA): the policy itself with its adapters switched off.

    Args:
        disabled: a context manager factory that switches the policy's adapters off (``simpo.models.adapters``).
    """

    mode = "adapter_off"
    identity: dict[str, Any] | None = None

    def __init__(self, disabled: Callable[[PreTrainedModel], AbstractContextManager[None]]) -> None:
        self.disabled = disabled
        self.placement: ReferencePlacement | None = None

    def prepare(self, placement: ReferencePlacement) -> None:
        self.placement = placement

    @torch.no_grad()
    def sums(self, batch: dict[str, Any]) -> torch.Tensor:
        assert self.placement is not None, "prepare() first"
        policy = self.placement.policy
        with self.disabled(policy):
            return self.placement.scorer.sequence_stats(policy, batch).logp_sum


class CachedReference:
    """``reference=cached``: the reference's log-prob sums of every pair, computed once and stored at ``path``.

    Before the first step (or the first validation) the table is loaded from ``path``, or computed by one no-grad
    pass over the training and validation pairs: with the policy itself when it still holds the initial weights
    (a fresh run whose reference is its initial policy, before any checkpoint is loaded), otherwise with a reference
    built by ``factory`` (the initial policy rebuilt, or ``reference.name_or_path``): a resume never computes the
    table from the trained weights it loaded.

    Args:
        path: the table's file (its name is the fingerprint of data, reference, dtype and code).
        meta: what the fingerprint was made from (stored beside the values).
        factory: builds the reference model when the policy cannot serve as one.
        policy_is_reference: the reference is the initial policy (``reference.name_or_path=null``).
        data: the pairs the table covers, and the pass's collator and batch size.
    """

    mode = "cached"
    identity: dict[str, Any] | None = None

    def __init__(
        self, path: Path, meta: dict[str, Any], factory: ModelFactory, policy_is_reference: bool, data: ReferenceData
    ) -> None:
        self.path = path
        self.data = data
        self.meta = meta
        self.factory = factory
        self.policy_is_reference = policy_is_reference
        self.table: ReferenceTable | None = None
        self.computed_seconds: float | None = None

    def prepare(self, placement: ReferencePlacement) -> None:
        if self.table is not None:
            return
        if self.path.is_file():
            self.table, _ = ReferenceTable.load(self.path)
            log.info("reference=cached: %d pairs' reference log-probs loaded from %s", len(self.table), self.path)
            return
        stale = tables_with_meta(self.path.parent, self.meta, self.path) if self.path.parent.is_dir() else []
        if stale:
            log.info("reference=cached: the scoring code (simpo/scoring.py, simpo/reference/) changed since the table "
                     "of these pairs and reference was computed (%s): computing it again once (the old file can be "
                     "deleted)", ", ".join(p.name for p in stale))  # fmt: skip
        # The policy serves as its own reference only while it holds the initial weights: a fresh run before its
        # first step; otherwise (a resume) the reference is rebuilt from its source.
        fresh = self.policy_is_reference and placement.policy_is_initial
        model = placement.policy if fresh else build_reference_model(placement, self.factory)
        start = time.monotonic()
        share = (self.data.batch_size, placement.device, placement.rank, placement.world)
        with placement.forward_context():
            rows = reference_rows(lambda b: placement.scorer.sequence_stats(model, b), self.data.splits,
                                  self.data.collate, *share)  # fmt: skip
        self.table = ReferenceTable.from_rows(rows)
        self.computed_seconds = time.monotonic() - start
        if placement.is_writer:
            self.table.save(self.path, self.meta)
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        log.info("reference=cached: computed %d pairs' reference log-probs in %.1f s (once; stored in %s)",
                 len(self.table), self.computed_seconds, self.path)  # fmt: skip

    def sums(self, batch: dict[str, Any]) -> torch.Tensor:
        assert self.table is not None, "prepare() first"
        values = self.table.lookup(batch["pair_keys"])  # (P, 4)
        columns = [values[:, 0], values[:, 2], values[:, 1], values[:, 3]] if batch.get("num_kl_pairs") else \
            [values[:, 0], values[:, 1]]  # fmt: skip
        return torch.cat(columns).to(device=batch["input_ids"].device, dtype=torch.float32)


ReferenceProvider = CachedReference | ModelReference | AdapterOffReference
