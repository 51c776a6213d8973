"""``sdpa_segments``: PyTorch's SDPA run segment by segment over packed rows, the CPU kernel of the packed layouts.

A packed row (``data.layout=packed`` / ``shared_prompt_packed``) holds several sequences or pairs, and its dense mask
(``simpo.core.attention_masks``) lets no token see past its own segment. SDPA's CPU kernels do not skip masked blocks,
so one call over a whole row spends quadratic time in the row's length on pairs that cannot see each other. This
kernel gives each segment its own SDPA call, on the segment's slice of the queries, keys, values and the same mask:
the same attention (every masked-out weight is exactly 0 either way), at the cost of the segments' own lengths.
Positions outside every segment (padding) get a zero output instead of attending to themselves: no scored token
reads them.

The decoder gets the segments as the keyword argument ``segment_spans`` (``segment_spans(segment_ids)``), which
Transformers passes on to the attention function; without it (a padded batch) the kernel is plain SDPA.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

SEGMENT_SDPA = "sdpa_segments"
Spans = list[list[tuple[int, int]]]  # per row, the [start, end) of each segment, in order


def segment_spans(segment_ids: torch.Tensor) -> Spans:
    """The segments of each row: maximal runs of one segment id >= 0.

    Args:
        segment_ids: (R, T) long, -1 on padding (``data.collate``).
    """
    ids = segment_ids.cpu()
    change = torch.ones(ids.shape, dtype=torch.bool)
    change[:, 1:] = ids[:, 1:] != ids[:, :-1]
    spans: Spans = []
    for row, starts in zip(ids.tolist(), change.tolist(), strict=True):
        edges = [i for i, start in enumerate(starts) if start] + [len(row)]
        spans.append([(s, e) for s, e in itertools.pairwise(edges) if row[s] >= 0])
    return spans


def segment_sdpa_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Transformers' attention-function interface: (R, heads, T, D) ``query`` (``key``/``value`` with the KV heads)
    and the (R, 1, T, T) layout mask -> (R, T, heads, D) output, one SDPA call per span of ``segment_spans``."""
    spans: Spans | None = kwargs.pop("segment_spans", None)
    if spans is None or attention_mask is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    rows, heads, length = query.shape[0], query.shape[1], query.shape[2]
    out_rows = []
    for r, row_spans in enumerate(spans):
        pieces, at = [], 0
        for start, end in row_spans:
            if start > at:
                pieces.append(query.new_zeros(1, start - at, heads, value.shape[-1]))
            out, _ = sdpa_attention_forward(
                module, query[r : r + 1, :, start:end], key[r : r + 1, :, start:end],
                value[r : r + 1, :, start:end], attention_mask[r : r + 1, :, start:end, start:end], **kwargs,
            )  # fmt: skip
            pieces.append(out)
            at = end
        if at < length:
            pieces.append(query.new_zeros(1, length - at, heads, value.shape[-1]))
        out_rows.append(torch.cat(pieces, dim=1))
    if len(out_rows) != rows:
        raise ValueError(f"segment_spans has {len(out_rows)} rows for a batch of {rows}")
    return torch.cat(out_rows, dim=0), None


AttentionInterface.register(SEGMENT_SDPA, segment_sdpa_forward)
AttentionMaskInterface.register(SEGMENT_SDPA, sdpa_mask)  # padded batches: the masks SDPA takes
