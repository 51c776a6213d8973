"""One scoring forward for every path that scores preference pairs: the training step, the reference pass (or a
reference held beside the policy) and evaluation. No Lightning, no Hydra: a causal LM, its head settings and a
collated batch in any layout go in; per-sequence summed log-probs and token counts come out.

A batch of n pairs (``PreferenceCollator``, optionally wrapped by ``simpo.reference.collate.ReferenceCollator``) holds
2n scored sequences, chosen responses first (sequence i) then rejected (n + i); of the n pairs the last
``num_kl_pairs`` (K) are KTO's mismatched pseudo-pairs, which the objective sees only as KL estimates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import PreTrainedModel

from simpo.core.attention_masks import layout_attention_mask
from simpo.core.chunked_logprobs import check_chunk_size, check_head_backward
from simpo.core.labelled_head import METHOD_NAME, attach_labelled_logps, supports_labelled_head
from simpo.core.logprobs import SequenceLogps, target_sequence_logps
from simpo.core.segment_attention import SEGMENT_SDPA, segment_spans
from simpo.objectives import PairLogps

ReferenceSums = Callable[[dict[str, Any]], torch.Tensor]  # batch -> (2n,) reference log-prob sums, batch order


class Scorer:
    """Scores preference batches with a causal LM.

    Args:
        chunk_size: labelled tokens projected onto the vocabulary at a time (``model.chunk_size``), so the largest
            vocabulary-sized buffer is (chunk_size, V); ``None`` builds the full (R, T, V) logits.
        head_backward: how the labelled-only head forms its gradient (``model.head_backward``,
            ``simpo.core.labelled_head``).
    """

    def __init__(self, chunk_size: int | None = 1024, head_backward: str = "auto") -> None:
        check_chunk_size(chunk_size)
        check_head_backward(head_backward)
        self.chunk_size = chunk_size
        self.head_backward = head_backward

    def attach(self, model: PreTrainedModel) -> PreTrainedModel:
        """Give ``model`` (the policy, or a reference built like it) the labelled-only head when ``chunk_size`` is
        set, so it never forms the full logits; returns it."""
        if self.chunk_size is not None:
            attach_labelled_logps(model, self.chunk_size, self.head_backward)
        return model

    def sequence_stats(self, model: PreTrainedModel, batch: dict[str, Any]) -> SequenceLogps:
        """Per-sequence statistics of ``model`` on a batch in any layout.

        Args:
            model: a causal LM, prepared by ``attach`` when ``chunk_size`` is set.
            batch: a ``PreferenceCollator`` batch of n pairs: ``input_ids``, ``attention_mask`` (R, T); the scored
                tokens ``target_index``, ``target_ids``, ``target_sequence`` (M,); ``num_pairs``; and, for the
                packed and shared-prompt layouts, ``position_ids``, ``segment_ids``, ``branch_ids`` (R, T).

        Returns:
            ``SequenceLogps`` with (2n,) fields: chosen responses first, then rejected.
        """
        inputs: dict[str, Any] = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if "segment_ids" in batch:  # packed / shared prompt: attention confined by the layout
            dtype = next(model.parameters()).dtype
            inputs["attention_mask"] = layout_attention_mask(
                model.config, batch["segment_ids"], batch["branch_ids"], batch["position_ids"], dtype
            )
            inputs["position_ids"] = batch["position_ids"]
            if model.config._attn_implementation == SEGMENT_SDPA:  # the kernel attends segment by segment
                inputs["segment_spans"] = segment_spans(batch["segment_ids"])
        targets = (batch["target_index"], batch["target_ids"], batch["target_sequence"])
        n_sequences = 2 * int(batch["num_pairs"])
        if self.chunk_size is not None and supports_labelled_head(model.config):
            return SequenceLogps(*getattr(model, METHOD_NAME)(inputs, targets, n_sequences))
        return target_sequence_logps(model(**inputs).logits, *targets, n_sequences)

    def pair_logps(
        self, model: PreTrainedModel, batch: dict[str, Any], reference: ReferenceSums | None = None
    ) -> tuple[PairLogps, SequenceLogps, SequenceLogps]:
        """What an objective takes for the batch's P = n - K real pairs, and ``model``'s chosen and rejected
        statistics of those pairs ((P,) fields each).

        Args:
            model: the policy.
            batch: as for ``sequence_stats``, with ``num_kl_pairs`` (K, default 0) and, when ``reference`` reads a
                table, ``pair_keys``.
            reference: the reference's (2n,) log-prob sums of the batch, for objectives that need them; with K > 0
                the pseudo-pairs' policy and reference sums become ``kl_logp_sum`` / ``ref_kl_logp_sum`` (2K,).
        """
        n, k = int(batch["num_pairs"]), int(batch.get("num_kl_pairs", 0))
        stats = self.sequence_stats(model, batch)  # (2n,)
        chosen_all, rejected_all = stats.split(n)
        p = n - k
        chosen, kl_chosen = chosen_all.split(p)
        rejected, kl_rejected = rejected_all.split(p)
        pair = PairLogps(chosen.logp_sum, rejected.logp_sum, chosen.token_count, rejected.token_count)
        if reference is not None:
            ref = reference(batch).to(stats.logp_sum.dtype)  # (2n,)
            pair.ref_chosen_logp_sum, pair.ref_rejected_logp_sum = ref[:p], ref[n : n + p]
            if k:
                pair.kl_logp_sum = torch.cat([kl_chosen.logp_sum, kl_rejected.logp_sum]).detach()
                pair.ref_kl_logp_sum = torch.cat([ref[p:n], ref[n + p :]])
        return pair, chosen, rejected
