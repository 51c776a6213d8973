"""The policy's labelled-only vocabulary head: which architectures allow it, and the bound method that runs it.

For the causal LMs listed here the logits are exactly ``lm_head(model(...).last_hidden_state)`` (Gemma 2 adds a
soft cap, applied by ``chunked_target_logps``), so only the labelled positions need projecting onto the vocabulary,
``chunk_size`` tokens at a time; any other architecture takes the plain full-logits path.
"""

from __future__ import annotations

import types
from functools import partial
from typing import Any

import torch
from transformers import PretrainedConfig, PreTrainedModel

from simpo.core.chunked_logprobs import check_chunk_size, check_head_backward, chunked_target_logps

LABELLED_ONLY_MODEL_TYPES = frozenset({"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi3"})
METHOD_NAME = "simpo_labelled_logps"  # registered with FSDP2 so the root unit's weights are gathered around it


def supports_labelled_head(config: PretrainedConfig) -> bool:
    """Whether ``config``'s architecture computes its logits as ``lm_head(last_hidden_state)`` (soft cap aside)."""
    return getattr(config, "model_type", None) in LABELLED_ONLY_MODEL_TYPES


def labelled_logps(
    policy: PreTrainedModel,
    decoder_inputs: dict[str, Any],
    targets: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    num_sequences: int,
    chunk_size: int,
    head_backward: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N,) log-prob sums, token counts and logit sums from the decoder's final hidden states, projecting only the
    scored positions onto the vocabulary, ``chunk_size`` tokens at a time.

    Args:
        policy: the causal LM (its decoder and ``lm_head``).
        decoder_inputs: ``input_ids`` (R, T) and the layout's ``attention_mask`` / ``position_ids``.
        targets: ``target_index``, ``target_ids``, ``target_sequence``, each (M,) (see ``data/collate.py``).
        num_sequences: N, the sequences of the batch.
        chunk_size: labelled tokens projected at a time.
        head_backward: ``auto`` (``store`` for at most 2 chunks of scored tokens or a frozen head, else
            ``recompute``), ``recompute`` (the logits are projected again, chunk by chunk, in backward) or ``store``
            (``d logp / d logits`` formed in forward and kept, (M, V), for a backward without the projection); see
            ``simpo/core/chunked_logprobs.py``.
    """
    hidden = policy.get_decoder()(**decoder_inputs).last_hidden_state  # (R, T, H)
    softcap = getattr(policy.config, "final_logit_softcapping", None)
    stats = chunked_target_logps(hidden, *targets, num_sequences, policy.lm_head, chunk_size, softcap, head_backward)
    return stats.logp_sum, stats.token_count, stats.logit_sum


def attach_labelled_logps(policy: PreTrainedModel, chunk_size: int, head_backward: str = "auto") -> None:
    """Bind ``labelled_logps`` to ``policy`` as ``policy.simpo_labelled_logps(decoder_inputs, targets, n)``: a method
    of the policy itself, so that under FSDP the root unit's weights (embeddings, final norm, lm_head) are gathered
    around it like around forward (``register_fsdp_forward_method(policy, METHOD_NAME)``)."""
    check_chunk_size(chunk_size)
    check_head_backward(head_backward)
    bound = partial(labelled_logps, chunk_size=chunk_size, head_backward=head_backward)
    setattr(policy, METHOD_NAME, types.MethodType(bound, policy))
