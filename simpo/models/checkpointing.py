"""Activation checkpointing of the decoder layers (``model.gradient_checkpointing``): off, full or selective.

- ``false``: every layer keeps what autograd saves for backward (the most memory, no recomputation).
- ``true`` (full): each decoder layer keeps only its input; backward runs the layer's forward again (every matmul
  and the attention recomputed: +16% training time on the CPU benchmark, the least memory).
- ``auto`` (the default): ``selective`` on CPU, ``false`` on CUDA (``choose_checkpointing``; ``train.py`` records the
  choice in ``config.yaml``).
- ``selective``: each decoder layer keeps the outputs of its matmuls and of the attention kernel and recomputes
  only the cheap element-wise work in backward (norms, rotary embedding, the MLP's activation and product, casts).
  About 60% of full checkpointing's saving for ~2% more training time (``docs/performance.md``). It is PyTorch's
  selective activation checkpointing (``torch.utils.checkpoint.create_selective_checkpoint_contexts``) with the
  policy below.

Every mode gives the same values and gradients: the recomputed operations are the same deterministic operations on the
same inputs (``tests/simpo/test_checkpointing.py`` compares them bit for bit).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

CHECKPOINTING = (False, True, "selective", "auto")  # the values of model.gradient_checkpointing

_aten = torch.ops.aten
# the operations whose outputs selective checkpointing keeps: matmuls and attention kernels (the costly ones)
KEPT_OPS = frozenset(
    {
        _aten.mm.default,
        _aten.addmm.default,
        _aten.bmm.default,
        _aten.baddbmm.default,
        _aten._scaled_dot_product_flash_attention_for_cpu.default,
        _aten._scaled_dot_product_flash_attention.default,
        _aten._scaled_dot_product_efficient_attention.default,
        _aten._scaled_dot_product_cudnn_attention.default,
    }
)


def is_checkpointing(value: Any) -> bool:
    """Whether ``value`` is one of ``CHECKPOINTING`` (``True``/``False`` themselves, not 1 or 0)."""
    return value is True or value is False or value in ("selective", "auto")


CHECKPOINTING_RULE = (is_checkpointing, "auto, false, true (all activations) or selective (element-wise)")


def choose_checkpointing(requested: bool | str, device: str) -> tuple[bool | str, str]:
    """The checkpointing to use for ``model.gradient_checkpointing=requested`` on ``device`` (``cpu`` | ``cuda``) and
    why: ``auto`` is ``selective`` on CPU, where it is measured to take 14% off a run's peak memory for 2% more step
    time (``benchmarks/RESULTS.md``), and ``false`` on CUDA until a GPU measurement of its cost there (element-wise
    work weighs more on a GPU). Any choice gives the same values and gradients."""
    if requested != "auto":
        return requested, "model.gradient_checkpointing"
    if device == "cuda":
        return False, "model.gradient_checkpointing=auto: off on CUDA until a GPU measurement of selective's cost"
    return "selective", "model.gradient_checkpointing=auto: on CPU selective (less memory, ~2% more step time)"


def _keep_matmuls(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    """Selective checkpointing's policy: keep matmul and attention outputs, recompute everything else."""
    return CheckpointPolicy.MUST_SAVE if op in KEPT_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def checkpointing_kwargs(mode: bool | str) -> dict[str, Any]:
    """The checkpointing kwargs for Transformers' ``activation_checkpointing_enable`` (and peft's) for
    ``mode`` (``True`` or ``"selective"``): non-reentrant checkpointing, with the selective policy for the latter."""
    kwargs: dict[str, Any] = {"use_reentrant": False}
    if mode == "selective":
        kwargs["context_fn"] = functools.partial(create_selective_checkpoint_contexts, _keep_matmuls)
    return kwargs
