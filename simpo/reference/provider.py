"""Where the reference log-probs of a batch come from, one class per ``reference=`` mode.

Each provider gives, for a collated batch of n = P + K pairs (P real, K of KTO's mismatched pseudo-pairs), the
reference's summed log-probs of its 2n sequences in the batch's order (chosen of pair i = i, rejected = n + i),
via ``sums(module, batch)``; ``prepare(module)`` runs once the trainer has placed (and sharded) the policy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from transformers import PreTrainedModel

from simpo.core.rng import rng_states, set_rng_states
from simpo.reference.pass_ import reference_rows
from simpo.reference.table import ReferenceTable

if TYPE_CHECKING:
    from simpo.training.module import SimPOModule

log = logging.getLogger(__name__)
ModelFactory = Callable[[], PreTrainedModel]


def _frozen(model: PreTrainedModel) -> PreTrainedModel:
    model.eval()
    model.requires_grad_(False)
    return model


def build_reference_model(module: SimPOModule, factory: ModelFactory) -> PreTrainedModel:
    """The reference from ``factory``, frozen, with the labelled-only head, on the policy's device (sharded like the
    policy under FSDP). The global RNG streams are left as they were, so training draws the same numbers."""
    states = rng_states()
    try:
        model = _frozen(factory())
    finally:
        set_rng_states(states)
    module.prepare_reference_model(model)
    return model


class ModelReference:
    """``reference=model``: a frozen copy of the reference beside the policy, run without gradients on each batch."""

    mode = "model"
    identity: dict[str, Any] | None = None  # which weights serve as the reference (set by ``build_reference``)

    def __init__(self, factory: ModelFactory) -> None:
        self.factory = factory
        self.model: PreTrainedModel | None = None

    def prepare(self, module: SimPOModule) -> None:
        if self.model is None:
            self.model = build_reference_model(module, self.factory)
            log.info("reference=model: a frozen reference copy is held beside the policy")

    @torch.no_grad()
    def sums(self, module: SimPOModule, batch: dict[str, Any]) -> torch.Tensor:
        """(2n,) reference log-prob sums of the batch's sequences."""
        assert self.model is not None, "prepare() first"
        return module.sequence_stats(self.model, batch).logp_sum


class AdapterOffReference:
    """``reference=adapter_off`` (LoRA): the policy itself with its adapters switched off.

    Args:
        disabled: a context manager factory that switches the policy's adapters off (``simpo.models.adapters``).
    """

    mode = "adapter_off"
    identity: dict[str, Any] | None = None

    def __init__(self, disabled: Callable[[PreTrainedModel], AbstractContextManager[None]]) -> None:
        self.disabled = disabled

    def prepare(self, module: SimPOModule) -> None:
        return None

    @torch.no_grad()
    def sums(self, module: SimPOModule, batch: dict[str, Any]) -> torch.Tensor:
        with self.disabled(module.policy):
            return module.sequence_stats(module.policy, batch).logp_sum


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
    """

    mode = "cached"
    identity: dict[str, Any] | None = None

    def __init__(self, path: Path, meta: dict[str, Any], factory: ModelFactory, policy_is_reference: bool) -> None:
        self.path = path
        self.meta = meta
        self.factory = factory
        self.policy_is_reference = policy_is_reference
        self.table: ReferenceTable | None = None
        self.computed_seconds: float | None = None

    def prepare(self, module: SimPOModule) -> None:
        if self.table is not None:
            return
        if self.path.is_file():
            self.table, _ = ReferenceTable.load(self.path)
            log.info("reference=cached: %d pairs' reference log-probs loaded from %s", len(self.table), self.path)
            return
        trainer = module.trainer
        # The policy serves as its own reference only while it holds the initial weights: a fresh run before its
        # first step. A resumed fit has loaded trained weights before this hook runs (its step counter is restored
        # only later, so the checkpoint path is what tells), and then the reference is rebuilt from its source.
        fresh = self.policy_is_reference and trainer.global_step == 0 and trainer.ckpt_path is None
        model = module.policy if fresh else build_reference_model(module, self.factory)
        datamodule = trainer.datamodule
        splits = [datamodule.splits[role] for role in ("train", "val") if role in datamodule.splits]
        start = time.monotonic()
        share = (datamodule.batch_size, module.device, trainer.global_rank, trainer.world_size)
        with trainer.precision_plugin.forward_context():
            rows = reference_rows(lambda b: module.sequence_stats(model, b), splits, datamodule.collator, *share)
        self.table = ReferenceTable.from_rows(rows)
        self.computed_seconds = time.monotonic() - start
        if trainer.is_global_zero:
            self.table.save(self.path, self.meta)
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        log.info("reference=cached: computed %d pairs' reference log-probs in %.1f s (once; stored in %s)",
                 len(self.table), self.computed_seconds, self.path)  # fmt: skip

    def sums(self, module: SimPOModule, batch: dict[str, Any]) -> torch.Tensor:
        assert self.table is not None, "prepare() first"
        values = self.table.lookup(batch["pair_keys"])  # (P, 4)
        columns = [values[:, 0], values[:, 2], values[:, 1], values[:, 3]] if batch.get("num_kl_pairs") else \
            [values[:, 0], values[:, 1]]  # fmt: skip
        return torch.cat(columns).to(device=module.device, dtype=torch.float32)


ReferenceProvider = CachedReference | ModelReference | AdapterOffReference
