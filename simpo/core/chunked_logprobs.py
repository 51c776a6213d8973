"""Labelled-token log-probs from final hidden states, projected onto the vocabulary a chunk of tokens at a time.

The vocabulary projection dominates SimPO's memory: full fp32 logits of a (2B, T) batch are (2B, T, V). Here
only the M positions that carry a label are projected, at most ``chunk_size`` of them at a time and no more than fit
a (rows, V) float32 buffer of ``CHUNK_BUFFER_BYTES`` (``chunk_rows``: 1,024 rows at a 32k vocabulary, 523 at Llama
3's 128k), in a custom autograd function. With ``z = softcap(hidden @ weight.T)`` and ``D = d logp / d raw logits =
(onehot(target) - softmax(z)) * softcap'`` (M, V), the gradients are ``grad_hidden = (g * D) @ weight`` and
``grad_weight = (g * D).T @ hidden`` for the incoming per-token gradient g (M,). Two ways to form them, and ``auto``
choosing between them per call (``head_backward``):

- ``recompute`` (the low-memory option): forward keeps only the (M,) log-sum-exps; backward projects each chunk
  again and forms both gradients. Four (C, H) x (H, V)-sized matmuls per chunk in all, and the largest
  vocabulary-sized buffer is one chunk's (rows, V) whatever the batch and sequence length.
- ``store``: forward forms ``D`` per chunk right after the logits and keeps ``D @ weight`` (M, H) and, when the
  head weight takes a gradient, ``D`` itself (M, V, in the weight's dtype); backward is one matmul,
  ``D.T @ (g * hidden)``. Three matmuls instead of four, at the cost of an (M, V) buffer held from forward to
  backward. A frozen head (LoRA) stores only the (M, H) product: two matmuls instead of three and no (M, V)
  buffer. ``g`` is known only in backward, which is why ``D`` must be kept: per-sequence (V, H) accumulators
  (g is constant per sequence) would cost N x V x H, more than M x V whenever a sequence has fewer scored tokens
  than the hidden size; fusing the loss into the head (known g) would tie the head to one objective.
- ``auto`` (the default): ``store`` where the memory is small, ``recompute`` otherwise, decided per call: ``store``
  when the head is frozen (no (M, V) buffer at all) or the call scores at most ``AUTO_STORE_CHUNKS`` chunks
  of tokens (the stored ``D`` then stays within that many chunk buffers, so ``model.chunk_size`` still bounds the
  head's memory), else ``recompute``.

Both are exact (the same sums as autograd through the full logits, in a different order). The softmax is
computed in float32 at least (float64 stays float64); gradients are cast back to the input dtype. Without
autograd (validation) both modes run the same forward and store nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from simpo.core.logprobs import SequenceLogps, labelled_positions, per_sequence
from simpo.core.value_checks import check_rule, is_integer
from simpo.errors import UserError

HEAD_BACKWARDS = ("auto", "recompute", "store")  # how the head's gradient is formed (model.head_backward)
AUTO_STORE_CHUNKS = 2  # head_backward=auto stores D for calls of at most this many chunks of scored tokens
CHUNK_BUFFER_BYTES = 256 * 2**20  # a chunk's (rows, V) float32 buffer is at most this large, whatever chunk_size


# The rules of the head's two settings, as (valid, expected) pairs: the training config check and every function that
# takes the values apply these, so each key has one rule and one wording
CHUNK_SIZE_RULE = (lambda v: v is None or (is_integer(v) and v >= 1), "null or a positive integer")
HEAD_BACKWARD_RULE = (lambda v: v in HEAD_BACKWARDS, f"one of {list(HEAD_BACKWARDS)}")


def check_chunk_size(chunk_size: object) -> None:
    """Raise ``UserError`` unless ``model.chunk_size`` is null or a positive integer."""
    check_rule("model.chunk_size", chunk_size, CHUNK_SIZE_RULE)


def check_head_backward(head_backward: object) -> None:
    """Raise ``UserError`` unless ``model.head_backward`` is one of ``HEAD_BACKWARDS``."""
    check_rule("model.head_backward", head_backward, HEAD_BACKWARD_RULE)


def chunk_rows(chunk_size: int, vocab_size: int) -> int:
    """Rows projected at a time: ``chunk_size`` tokens, fewer where a (rows, V) float32 buffer would exceed
    ``CHUNK_BUFFER_BYTES`` (at least one row). At a 32,000-token vocabulary 1,024 rows fit (125 MiB); at Llama 3's
    128,256 the bound gives 523 rows (256 MiB instead of 501 MiB per buffer)."""
    return max(1, min(chunk_size, CHUNK_BUFFER_BYTES // (4 * vocab_size)))


def resolve_head_backward(head_backward: str, scored: int, rows: int, head_trainable: bool) -> str:
    """``recompute`` or ``store`` for one call of the head: ``auto`` stores when the head is frozen or ``scored`` (M)
    is at most ``AUTO_STORE_CHUNKS`` chunks of ``rows`` (so the stored (M, V) factor stays within that many chunk
    buffers); the other two are returned as they are."""
    if head_backward != "auto":
        return head_backward
    return "store" if not head_trainable or scored <= AUTO_STORE_CHUNKS * rows else "recompute"


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor, softcap: float | None) -> torch.Tensor:
    """(C, V) logits of a chunk in the compute dtype, soft-capped if asked (``cap * tanh(z / cap)``)."""
    logits = hidden @ weight.T
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if softcap:
        logits = logits.div_(softcap).tanh_().mul_(softcap)
    return logits


def _logsumexp_(logits: torch.Tensor) -> torch.Tensor:
    """(C,) log-sum-exp of the (C, V) ``logits``, computed in place: the buffer is destroyed, none is added."""
    row_max = logits.amax(-1, keepdim=True)
    return logits.sub_(row_max).exp_().sum(-1).log_().add_(row_max.squeeze(-1))


def _softmax_(logits: torch.Tensor) -> torch.Tensor:
    """Turn the (C, V) ``logits`` into their softmax in place; return the (C,) log-sum-exps."""
    row_max = logits.amax(-1, keepdim=True)
    sums = logits.sub_(row_max).exp_().sum(-1, keepdim=True)
    logits.div_(sums)
    return sums.log_().add_(row_max).squeeze(-1)


def _cap_slope(logits: torch.Tensor, softcap: float | None) -> torch.Tensor | None:
    """``d cap * tanh(z / cap) / dz = 1 - (z_capped / cap)^2`` (C, V) from the soft-capped logits; None uncapped."""
    return torch.div(logits, softcap).square_().neg_().add_(1.0) if softcap else None


def _logit_grad_(
    probs: torch.Tensor, targets: torch.Tensor, slope: torch.Tensor | None, scale: torch.Tensor | None
) -> torch.Tensor:
    """``scale * d logp[target] / d raw logits`` (C, V), computed in the buffer of the softmax ``probs`` (C, V).

    ``d logp / d capped logits = onehot(target) - softmax``, times the soft cap's ``slope`` (C, V) if any;
    ``scale`` (C,) is the incoming gradient, ``None`` for 1.
    """
    rows = torch.arange(probs.shape[0], device=probs.device)
    if scale is None:
        probs.neg_()
        probs[rows, targets] += 1.0
    else:
        probs.mul_(-scale[:, None])
        probs[rows, targets] += scale
    if slope is not None:
        probs.mul_(slope)
    return probs


def _forward_stats(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_size: int, softcap: float | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token log-sum-exps, target logits and vocabulary-mean logits (each (M,)), one (C, V) buffer at a time."""
    m = hidden.shape[0]
    dtype = torch.promote_types(hidden.dtype, torch.float32)
    lse = torch.empty(m, dtype=dtype, device=hidden.device)
    target_logits, vocab_mean = torch.empty_like(lse), torch.empty_like(lse)
    for start in range(0, m, chunk_size):
        end = min(start + chunk_size, m)
        logits = _chunk_logits(hidden[start:end], weight, softcap)  # (C, V)
        target_logits[start:end] = logits.gather(-1, targets[start:end, None]).squeeze(-1)
        vocab_mean[start:end] = logits.mean(-1)
        lse[start:end] = _logsumexp_(logits)
        del logits  # freed before the next chunk's buffer is allocated, not after: one (C, V) buffer at a time
    return lse, target_logits, vocab_mean


class ChunkedLabelledLogps(torch.autograd.Function):
    """``logp[m] = log softmax(softcap(hidden[m] @ weight.T))[targets[m]]`` for M tokens, chunk by chunk, with the
    logits recomputed in backward (``head_backward=recompute``).

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
        lse, target_logits, vocab_mean = _forward_stats(hidden, weight, targets, chunk_size, softcap)
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
            h = hidden[start:end]
            logits = _chunk_logits(h, weight, softcap)  # (C, V), recomputed
            slope = _cap_slope(logits, softcap)
            probs = logits.sub_(lse[start:end, None]).exp_()  # softmax, in the same buffer
            grad = _logit_grad_(probs, targets[start:end], slope, grad_logps[start:end])
            del logits, probs, slope
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


class StoredGradLabelledLogps(torch.autograd.Function):
    """The same log-probs as ``ChunkedLabelledLogps``, with ``d logp / d logits`` formed in forward and kept for
    backward (``head_backward=store``): ``D @ weight`` (M, H) always, ``D`` (M, V) in the weight's dtype only when
    the weight takes a gradient. Inputs and outputs as ``ChunkedLabelledLogps``'s.
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
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dtype = torch.promote_types(hidden.dtype, torch.float32)
        target_logits = torch.empty(m, dtype=dtype, device=hidden.device)
        vocab_mean, logps = torch.empty_like(target_logits), torch.empty_like(target_logits)
        hidden_part = torch.empty_like(hidden) if need_hidden else None  # (M, H): D @ weight
        stored = weight.new_empty(m, weight.shape[0]) if need_weight else None  # (M, V): D
        in_place = stored is not None and stored.dtype == dtype  # the logits are formed in D's own rows
        for start in range(0, m, chunk_size):
            end = min(start + chunk_size, m)
            if in_place:
                logits = torch.matmul(hidden[start:end], weight.T, out=stored[start:end])  # (C, V)
                if softcap:
                    logits.div_(softcap).tanh_().mul_(softcap)
            else:
                logits = _chunk_logits(hidden[start:end], weight, softcap)  # (C, V)
            target_logits[start:end] = logits.gather(-1, targets[start:end, None]).squeeze(-1)
            vocab_mean[start:end] = logits.mean(-1)
            slope = _cap_slope(logits, softcap)
            logps[start:end] = target_logits[start:end] - _softmax_(logits)
            grad = _logit_grad_(logits, targets[start:end], slope, None).to(weight.dtype)  # D (C, V)
            if need_hidden:
                hidden_part[start:end] = grad @ weight
            if need_weight and not in_place:
                stored[start:end] = grad
            del logits, grad, slope
        ctx.save_for_backward(hidden if need_weight else None, stored, hidden_part)
        ctx.mark_non_differentiable(vocab_mean)
        return logps, vocab_mean

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_logps: torch.Tensor, grad_vocab_mean: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None]:
        hidden, stored, hidden_part = ctx.saved_tensors
        grad_hidden = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_hidden = (hidden_part * grad_logps[:, None]).to(hidden_part.dtype)
        if ctx.needs_input_grad[1]:  # sum_m g_m D_m^T h_m = D.T @ (g * hidden): no (M, V) temporary
            grad_weight = stored.T @ (hidden * grad_logps[:, None]).to(stored.dtype)
        return grad_hidden, grad_weight, None, None, None


def chunked_token_logps(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int,
    softcap: float | None = None,
    head_backward: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of ``targets`` under ``softcap(hidden @ weight.T)``, at most ``chunk_size`` rows at a time.

    Args:
        hidden: (M, H) hidden states of the M labelled positions.
        weight: (V, H) output projection (a bias-free head; a tied embedding matrix works the same).
        targets: (M,) label ids.
        chunk_size: tokens per chunk at most (>= 1), fewer where a (chunk, V) float32 buffer would exceed
            ``CHUNK_BUFFER_BYTES`` (``chunk_rows``); the largest vocabulary-sized buffer is (chunk, V), plus the
            stored (M, V) gradient factor with ``head_backward="store"``.
        softcap: Gemma 2's ``final_logit_softcapping`` (``cap * tanh(logits / cap)``); ``None`` or 0 for none.
        head_backward: ``auto``, ``recompute`` or ``store`` (see the module docstring); the same values and
            gradients.

    Returns:
        ``logps`` (M,) with exact gradients w.r.t. ``hidden`` and ``weight``, and ``vocab_mean`` (M,) the
        detached mean logit over the vocabulary, both float32 at least. Under autocast, ``hidden`` and
        ``weight`` are cast to the autocast dtype first (as ``nn.Linear`` would be) and the function runs with
        autocast off, so forward and the recomputation in backward see the same logits.
    """
    check_chunk_size(chunk_size)
    check_head_backward(head_backward)
    chunk_size = chunk_rows(chunk_size, weight.shape[0])
    head_backward = resolve_head_backward(head_backward, hidden.shape[0], chunk_size, weight.requires_grad)
    store = head_backward == "store" and torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    function = StoredGradLabelledLogps if store else ChunkedLabelledLogps
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        hidden, weight = hidden.to(dtype), weight.to(dtype)
        with torch.autocast(device_type, enabled=False):
            return function.apply(hidden, weight, targets, chunk_size, softcap)
    return function.apply(hidden, weight, targets, chunk_size, softcap)


def chunked_target_logps(
    hidden: torch.Tensor,
    target_index: torch.Tensor,
    target_ids: torch.Tensor,
    target_sequence: torch.Tensor,
    num_sequences: int,
    head: nn.Module,
    chunk_size: int,
    final_logit_softcapping: float | None = None,
    head_backward: str = "auto",
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
        head_backward: how the head's gradient is formed, ``auto``, ``recompute`` or ``store``
            (``model.head_backward``).

    Returns:
        ``SequenceLogps`` with (N,) fields: ``logp_sum`` (differentiable), ``token_count`` and ``logit_sum``.
    """
    if getattr(head, "bias", None) is not None:
        raise UserError("chunked log-probs need a bias-free output projection; set model.chunk_size=null")
    logps, vocab_mean = chunked_token_logps(
        hidden.flatten(0, 1)[target_index], head.weight, target_ids, chunk_size, final_logit_softcapping, head_backward
    )
    return per_sequence(logps, vocab_mean, target_sequence, num_sequences)


def chunked_sequence_logps(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    head: nn.Module,
    chunk_size: int,
    final_logit_softcapping: float | None = None,
    head_backward: str = "auto",
) -> SequenceLogps:
    """``chunked_target_logps`` of a padded batch: like ``simpo.core.logprobs.sequence_logps`` on ``head(hidden)``.

    Args:
        hidden: (N, T, H) final hidden states of the decoder.
        labels: (N, T) labels with ``IGNORE_INDEX`` on unlabelled positions (position t predicts t + 1).
        head, chunk_size, final_logit_softcapping, head_backward: as in ``chunked_target_logps``.
    """
    rows, positions, targets = labelled_positions(labels)
    index = rows * labels.shape[1] + positions
    softcap = final_logit_softcapping
    n = labels.shape[0]
    return chunked_target_logps(hidden, index, targets, rows, n, head, chunk_size, softcap, head_backward)
