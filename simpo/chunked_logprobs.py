"""Labelled-token log-probs from final hidden states, projected onto the vocabulary a chunk of tokens at a time.

The vocabulary projection dominates SimPO's memory: full fp32 logits of a (2B, T) batch are (2B, T, V). Here
only the M positions that carry a label are projected, at most ``chunk_size`` of them at a time, in a custom
autograd function:

- forward, without autograd: per chunk, the (C, V) logits give each token's log-sum-exp, target logit and
  vocabulary-mean logit; only the (M,) log-sum-exps are kept for backward.
- backward: per chunk, the logits are recomputed, turned into ``d logp / d logits = onehot - softmax`` times the
  incoming per-token gradient (and Gemma 2's soft-cap derivative), and multiplied into the gradients of the
  hidden states (C, H) and of the head weight (V, H, accumulated over chunks).

So the largest vocabulary-sized buffer is (chunk_size, V), whatever the batch and sequence length, and the
gradients are exact (the same sums as autograd through the full logits, in a different order). The softmax is
computed in float32 at least (float64 stays float64); gradients are cast back to the input dtype.
"""

from __future__ import annotations

import torch
from torch import nn

from simpo.logprobs import SequenceLogps, labelled_positions, per_sequence


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor, softcap: float | None) -> torch.Tensor:
    """(C, V) logits of a chunk in the compute dtype, soft-capped if asked (``cap * tanh(z / cap)``)."""
    logits = hidden @ weight.T
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if softcap:
        logits = logits.div_(softcap).tanh_().mul_(softcap)
    return logits


class ChunkedLabelledLogps(torch.autograd.Function):
    """``logp[m] = log softmax(softcap(hidden[m] @ weight.T))[targets[m]]`` for M tokens, chunk by chunk.

    Inputs: ``hidden`` (M, H), ``weight`` (V, H), ``targets`` (M,) long, ``chunk_size`` int >= 1,
    ``softcap`` float or None. Outputs: ``logps`` (M,) and ``vocab_mean`` (M,) (the mean of the soft-capped
    logits over the vocabulary; no gradient), both in float32 at least.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        chunk_size: int,
        softcap: float | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        m = hidden.shape[0]
        dtype = torch.promote_types(hidden.dtype, torch.float32)
        lse = torch.empty(m, dtype=dtype, device=hidden.device)
        target_logits = torch.empty_like(lse)
        vocab_mean = torch.empty_like(lse)
        for start in range(0, m, chunk_size):
            end = min(start + chunk_size, m)
            logits = _chunk_logits(hidden[start:end], weight, softcap)  # (C, V)
            target_logits[start:end] = logits.gather(-1, targets[start:end, None]).squeeze(-1)
            vocab_mean[start:end] = logits.mean(-1)
            # log-sum-exp in place: no second (C, V) buffer
            row_max = logits.amax(-1, keepdim=True)
            lse[start:end] = logits.sub_(row_max).exp_().sum(-1).log_().add_(row_max.squeeze(-1))
            del logits
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.chunk_size, ctx.softcap = chunk_size, softcap
        ctx.mark_non_differentiable(vocab_mean)
        return target_logits - lse, vocab_mean

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_logps: torch.Tensor, grad_vocab_mean: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None]:
        hidden, weight, targets, lse = ctx.saved_tensors
        chunk_size, softcap = ctx.chunk_size, ctx.softcap
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.zeros_like(hidden) if need_hidden else None
        # accumulate the head gradient over chunks in float32 at least (one matmul per chunk in the input dtype)
        acc_dtype = torch.promote_types(weight.dtype, torch.float32)
        grad_weight = torch.zeros(weight.shape, dtype=acc_dtype, device=weight.device) if need_weight else None
        grad_logps = grad_logps.to(lse.dtype)
        for start in range(0, hidden.shape[0], chunk_size):
            end = min(start + chunk_size, hidden.shape[0])
            h, g, t = hidden[start:end], grad_logps[start:end], targets[start:end]
            raw = (h @ weight.T).to(lse.dtype)  # (C, V)
            if softcap:
                tanh = raw.div_(softcap).tanh_()  # reuses the buffer: tanh(z / cap)
                grad = torch.mul(tanh, softcap).sub_(lse[start:end, None]).exp_()  # softmax (C, V)
            else:
                grad = raw.sub_(lse[start:end, None]).exp_()
            # d logp / d capped logits = onehot(target) - softmax, times the incoming gradient
            grad.mul_(-g[:, None])
            grad[torch.arange(end - start, device=grad.device), t] += g
            if softcap:  # d cap * tanh(z / cap) / dz = 1 - tanh^2
                grad.mul_(tanh.square_().neg_().add_(1.0))
                del tanh
            del raw
            grad = grad.to(weight.dtype)
            if need_hidden:
                grad_hidden[start:end] = grad @ weight
            if need_weight:
                if acc_dtype == weight.dtype:
                    grad_weight.addmm_(grad.T, h)
                else:
                    grad_weight += (grad.T @ h).to(acc_dtype)
            del grad
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None


def chunked_token_logps(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int,
    softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of ``targets`` under ``softcap(hidden @ weight.T)``, at most ``chunk_size`` rows at a time.

    Args:
        hidden: (M, H) hidden states of the M labelled positions.
        weight: (V, H) output projection (a bias-free head; a tied embedding matrix works the same).
        targets: (M,) label ids.
        chunk_size: tokens per chunk (>= 1); the largest vocabulary-sized buffer is (chunk_size, V).
        softcap: Gemma 2's ``final_logit_softcapping`` (``cap * tanh(logits / cap)``); ``None`` or 0 for none.

    Returns:
        ``logps`` (M,) with exact gradients w.r.t. ``hidden`` and ``weight``, and ``vocab_mean`` (M,) the
        detached mean logit over the vocabulary, both float32 at least. Under autocast, ``hidden`` and
        ``weight`` are cast to the autocast dtype first (as ``nn.Linear`` would be) and the function runs with
        autocast off, so forward and the recomputation in backward see the same logits.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, not {chunk_size}")
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        hidden, weight = hidden.to(dtype), weight.to(dtype)
        with torch.autocast(device_type, enabled=False):
            return ChunkedLabelledLogps.apply(hidden, weight, targets, chunk_size, softcap)
    return ChunkedLabelledLogps.apply(hidden, weight, targets, chunk_size, softcap)


def chunked_target_logps(
    hidden: torch.Tensor,
    target_index: torch.Tensor,
    target_ids: torch.Tensor,
    target_sequence: torch.Tensor,
    num_sequences: int,
    head: nn.Module,
    chunk_size: int,
    final_logit_softcapping: float | None = None,
) -> SequenceLogps:
    """Per-sequence statistics of the scored tokens of any batch layout, with a (chunk_size, V) buffer at most.

    Only the M scored positions are projected onto the vocabulary (prompt and padding never are).

    Args:
        hidden: (R, T, H) final hidden states of the decoder.
        target_index: (M,) positions in the flattened (R * T) batch whose hidden states predict ``target_ids``.
        target_ids: (M,) the scored tokens.
        target_sequence: (M,) their sequences, in [0, num_sequences).
        num_sequences: N.
        head: the output projection H -> V, a bias-free ``nn.Linear`` (e.g. ``lm_head``, tied or not).
        chunk_size: scored tokens projected at a time.
        final_logit_softcapping: Gemma 2's soft cap; ``None`` for none.

    Returns:
        ``SequenceLogps`` with (N,) fields: ``logp_sum`` (differentiable), ``token_count`` and ``logit_sum``.
    """
    if getattr(head, "bias", None) is not None:
        raise ValueError("chunked log-probs need a bias-free output projection; set model.chunk_size=null")
    logps, vocab_mean = chunked_token_logps(
        hidden.flatten(0, 1)[target_index], head.weight, target_ids, chunk_size, final_logit_softcapping
    )
    return per_sequence(logps, vocab_mean, target_sequence, num_sequences)


def chunked_sequence_logps(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    head: nn.Module,
    chunk_size: int,
    final_logit_softcapping: float | None = None,
) -> SequenceLogps:
    """``chunked_target_logps`` of a padded batch: like ``simpo.logprobs.sequence_logps`` on ``head(hidden)``.

    Args:
        hidden: (N, T, H) final hidden states of the decoder.
        labels: (N, T) labels with ``IGNORE_INDEX`` on unlabelled positions (position t predicts t + 1).
        head, chunk_size, final_logit_softcapping: as in ``chunked_target_logps``.
    """
    rows, positions, targets = labelled_positions(labels)
    index = rows * labels.shape[1] + positions
    softcap = final_logit_softcapping
    return chunked_target_logps(hidden, index, targets, rows, labels.shape[0], head, chunk_size, softcap)
