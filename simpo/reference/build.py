"""Build the reference provider of ``reference=`` for an objective that needs one (``reference.mode``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import datasets
from transformers import PreTrainedModel

from data.tokenizers import cache_root
from simpo.errors import UserError
from simpo.objectives import Objective
from simpo.reference import REFERENCE_MODES
from simpo.reference.collate import ReferenceCollator
from simpo.reference.identity import policy_identity, table_fingerprint, weights_identity
from simpo.reference.kl_pairs import KLPartners
from simpo.reference.provider import (
    AdapterOffReference,
    CachedReference,
    ModelReference,
    ReferenceData,
    ReferenceProvider,
)

log = logging.getLogger(__name__)
DIGEST_MEMO = "digests"  # under the cache root: the content digests of weight files, by path and stat


def check_reference_config(reference: Mapping[str, Any] | None, objective: Objective, adapters: bool) -> str | None:
    """The reference mode to use (``None`` when the objective needs none).

    Raises:
        ValueError: the objective needs a reference but ``reference`` is null or its mode unknown, or
            ``adapter_off`` without adapters (``peft``) or with a ``reference.name_or_path`` it would not use; names
            the key.
    """
    if not objective.needs_reference:
        return None
    name = type(objective).__name__
    if not reference:
        raise UserError(f"loss={name} needs a reference model: set reference=cached (or reference=model)")
    mode = reference.get("mode")
    if mode not in REFERENCE_MODES:
        raise UserError(f"reference.mode must be one of {list(REFERENCE_MODES)}, not {mode!r}")
    if mode == "adapter_off" and not adapters:
        raise UserError("reference=adapter_off needs LoRA adapters to switch off (peft=lora); use reference=cached")
    if mode == "adapter_off" and reference.get("name_or_path") is not None:
        raise UserError(
            f"reference.name_or_path={reference['name_or_path']} is not used by reference=adapter_off (peft=lora's "
            "default: the frozen base with the adapters switched off is the reference): add reference=cached (or "
            "reference=model) to take those weights as the reference, or leave reference.name_or_path=null"
        )
    return mode


def install_reference_collator(datamodule: Any, objective: Objective, max_length: int) -> ReferenceData:
    """Wrap the data module's collator so batches carry ``pair_keys`` (and KTO's mismatched pseudo-pairs, which the
    token budget then counts); call it after the splits are loaded and before any loader is built. Returns the pairs,
    collator and batch size a cached table's pass uses."""
    splits: list[datasets.Dataset] = [datamodule.splits[r] for r in ("train", "val") if r in datamodule.splits]
    partners = KLPartners(splits, max_length) if objective.needs_kl_pairs else None
    datamodule.set_collator(ReferenceCollator(datamodule.collator, partners))
    return ReferenceData(splits, datamodule.collator, datamodule.batch_size)


def build_reference(
    mode: str,
    reference: Mapping[str, Any],
    factory: Callable[[str | None], PreTrainedModel],
    fingerprint_parts: dict[str, Any],
    policy_source: dict[str, Any],
    data: ReferenceData,
) -> ReferenceProvider:
    """The provider of ``mode``.

    Args:
        mode: ``cached`` | ``model`` | ``adapter_off``.
        reference: the ``reference`` config section (``name_or_path``: null = the initial policy's weights).
        factory: builds a model from a weights source (``None``: the initial policy, re-seeded for a random init).
        fingerprint_parts: what else a cached table depends on (data fingerprints, dtype, precision, KL pairs).
        policy_source: ``policy_identity`` of the initial policy.
        data: what ``install_reference_collator`` returned (the pairs of a cached table's pass).

    The provider's ``identity`` says which weights serve as the reference (``mode``, ``name_or_path`` and the
    weights' identity: the files' content digests, or the random init); it is logged here and ``train.py`` writes it
    into ``status.json``; a cached table's metadata holds it too.
    """
    name = reference.get("name_or_path")
    provider: ReferenceProvider
    if mode == "adapter_off":
        from simpo.models.adapters import adapters_disabled

        provider, weights = AdapterOffReference(adapters_disabled), {"base": "the policy's frozen base, adapters off"}
    else:
        weights = weights_identity(name, digest_memo()) if name is not None else policy_source
        if mode == "model":
            provider = ModelReference(lambda: factory(name))
        else:
            parts = {**fingerprint_parts, "reference": weights}
            path = cache_root() / "reference" / f"{table_fingerprint(parts)}.pt"
            provider = CachedReference(path, parts, lambda: factory(name), name is None, data)
    provider.identity = {"mode": mode, "name_or_path": name, "weights": weights}
    log.info("reference=%s: %s", mode, json.dumps(provider.identity["weights"], default=str)[:500])
    return provider


def digest_memo() -> Path:
    """Where the content digests of weight files are remembered (``simpo.reference.identity.file_digest``)."""
    return cache_root() / DIGEST_MEMO


__all__ = ["build_reference", "check_reference_config", "digest_memo", "install_reference_collator", "policy_identity"]
