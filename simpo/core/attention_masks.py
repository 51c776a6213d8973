"""Attention masks of the packed and shared-prompt layouts, in the form each attention kernel takes.

A layout (``data/collate.py``) describes who may attend to whom with three (R, T) tensors: ``segment_ids`` (the
sequence or pair a token belongs to within its row, -1 on padding), ``branch_ids`` (0: seen by the whole segment,
1: chosen, 2: rejected) and ``position_ids``. Query q may attend to key k when both are in the same segment,
k is not after q in the row, and k is shared (branch 0) or on q's own branch; a sliding-window layer also needs
``position[q] - position[k] < window`` (distances in position space, so a rejected token sees the prompt as if the
chosen response were not between them). Every token may attend to itself, so that padding rows are never fully
masked (a fully masked softmax row is NaN, and NaN times a zero gradient is still NaN).

Kernels: ``sdpa`` (and ``sdpa_segments``, which runs it segment by segment: ``simpo.core.segment_attention``) takes a
boolean (R, 1, T, T) mask (True: attend), ``eager`` an additive float mask, and
``flex_attention`` a ``BlockMask`` built from the same rule (``mask_mod``), which skips the fully masked blocks.
Models whose layers alternate full and sliding-window attention (``config.layer_types``: Gemma 2, Qwen 2/3) get a
dict of masks by layer type, which their forward accepts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import PretrainedConfig

from simpo.core.segment_attention import SEGMENT_SDPA
from simpo.errors import UserError

Mask = torch.Tensor | object  # a dense tensor, or a flex_attention BlockMask


def allowed(
    segment_ids: torch.Tensor, branch_ids: torch.Tensor, position_ids: torch.Tensor, window: int | None = None
) -> torch.Tensor:
    """(R, 1, T, T) bool: may query q attend to key k (the rule of the module docstring).

    Args:
        segment_ids, branch_ids, position_ids: (R, T) long.
        window: sliding-window size in positions, or ``None`` for full attention.
    """
    t = segment_ids.shape[-1]
    index = torch.arange(t, device=segment_ids.device)
    seg_q, seg_k = segment_ids[:, :, None], segment_ids[:, None, :]
    branch_q, branch_k = branch_ids[:, :, None], branch_ids[:, None, :]
    mask = (seg_q == seg_k) & (seg_q >= 0) & (index[None, None, :] <= index[None, :, None])
    mask &= (branch_k == 0) | (branch_k == branch_q)
    if window is not None:
        mask &= (position_ids[:, :, None] - position_ids[:, None, :]) < window
    mask |= torch.eye(t, dtype=torch.bool, device=segment_ids.device)
    return mask[:, None]


def _mask_mod(
    segment_ids: torch.Tensor, branch_ids: torch.Tensor, position_ids: torch.Tensor, window: int | None
) -> Callable[..., torch.Tensor]:
    """The rule of ``allowed`` as a flex_attention ``mask_mod(b, h, q, k)``."""

    def mask_mod(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        seg_q, seg_k = segment_ids[b, q], segment_ids[b, k]
        branch_q, branch_k = branch_ids[b, q], branch_ids[b, k]
        ok = (seg_q == seg_k) & (seg_q >= 0) & (k <= q) & ((branch_k == 0) | (branch_k == branch_q))
        if window is not None:
            ok = ok & (position_ids[b, q] - position_ids[b, k] < window)
        return ok | (q == k)

    return mask_mod


def kernel_mask(
    attn_implementation: str,
    segment_ids: torch.Tensor,
    branch_ids: torch.Tensor,
    position_ids: torch.Tensor,
    window: int | None,
    dtype: torch.dtype,
) -> Mask:
    """The mask in the form ``attn_implementation`` takes (see the module docstring).

    Args:
        attn_implementation: the model's ``config._attn_implementation``.
        segment_ids, branch_ids, position_ids: (R, T) long.
        window: sliding-window size or ``None``.
        dtype: the compute dtype (the additive mask of ``eager`` uses its most negative value).
    """
    if attn_implementation == "flex_attention":
        from torch.nn.attention.flex_attention import create_block_mask

        rows, t = segment_ids.shape
        return create_block_mask(
            _mask_mod(segment_ids, branch_ids, position_ids, window), rows, None, t, t, device=segment_ids.device
        )
    mask = allowed(segment_ids, branch_ids, position_ids, window)
    if attn_implementation == "eager":
        additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
        return additive.masked_fill_(~mask, torch.finfo(dtype).min)
    if attn_implementation in ("sdpa", SEGMENT_SDPA):
        return mask
    raise UserError(
        f"model.attn_implementation={attn_implementation} cannot take the masks of data.layout=packed / shared_prompt:"
        f" use sdpa, {SEGMENT_SDPA}, eager or flex_attention (or data.layout=padded)"
    )


def layout_attention_mask(
    config: PretrainedConfig,
    segment_ids: torch.Tensor,
    branch_ids: torch.Tensor,
    position_ids: torch.Tensor,
    dtype: torch.dtype,
) -> Mask | dict[str, Mask]:
    """The ``attention_mask`` argument of the decoder for a packed or shared-prompt batch.

    Models with ``config.layer_types`` get ``{layer type: mask}`` (sliding layers with ``config.sliding_window``);
    others one mask, windowed when ``config.sliding_window`` is set (Mistral).
    """
    implementation = config._attn_implementation
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is None:
        return kernel_mask(implementation, segment_ids, branch_ids, position_ids, window, dtype)
    windows = {kind: window if kind == "sliding_attention" else None for kind in set(layer_types)}
    return {
        kind: kernel_mask(implementation, segment_ids, branch_ids, position_ids, size, dtype)
        for kind, size in windows.items()
    }
