"""AdamW with decoupled weight decay on matrices only, and a linear-warmup cosine schedule."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from simpo.core.value_checks import check_rule, is_number
from simpo.errors import UserError


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: parameters with >= 2 dims get ``weight_decay``; biases and norms get none."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """LR multiplier at ``step``: linear 0 -> 1 over ``warmup_steps``, then cosine 1 -> 0 at ``total_steps``.

    Same shape as the reference recipes (``transformers``' cosine schedule with warmup).
    """
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


# optimizer.implementation -> torch.optim.AdamW's keyword arguments. ``fused``: one kernel over all parameters
# (CPU and CUDA); ``foreach``: batched tensor ops; ``for_loop``: one parameter at a time (torch's CPU default, and
# what Hugging Face's ``adamw_torch`` runs on a CPU). Same update rule; they differ only in float rounding.
IMPLEMENTATIONS: dict[str, dict[str, bool]] = {
    "fused": {"fused": True},
    "foreach": {"foreach": True},
    "for_loop": {"foreach": False},
}


# (valid, expected) of the optimizer keys checked beside the code that uses them; the training config check applies them
WARMUP_RATIO_RULE = (lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)")
IMPLEMENTATION_RULE = (lambda v: v in IMPLEMENTATIONS, f"one of {list(IMPLEMENTATIONS)}")


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    warmup_ratio: float,
    total_steps: int,
    implementation: str = "fused",
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``param_groups`` (run as ``implementation``, a key of ``IMPLEMENTATIONS``) and a per-step
    warmup-cosine ``LambdaLR`` over ``total_steps``."""
    check_rule("optimizer.warmup_ratio", warmup_ratio, WARMUP_RATIO_RULE)
    check_rule("optimizer.implementation", implementation, IMPLEMENTATION_RULE)
    optimizer = torch.optim.AdamW(
        param_groups(model, weight_decay), lr=lr, betas=tuple(betas), eps=eps, **IMPLEMENTATIONS[implementation]
    )
    warmup_steps = math.ceil(warmup_ratio * total_steps)
    if total_steps == 1 and warmup_steps >= 1:  # warmup starts from 0, so the only step would not train
        raise UserError(
            f"optimizer.warmup_ratio={warmup_ratio} of a single optimizer step keeps its learning rate at 0: nothing "
            "would be trained. Set optimizer.warmup_ratio=0 or train more steps (trainer.max_steps, more data)"
        )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, total_steps, warmup_steps)
    )
    return optimizer, scheduler


def squared_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The float32 sum of squares of every element of ``tensors`` (a ``DTensor`` counts its local shard only; the
    caller all-reduces the shards' sums), computed as one norm per tensor, without a squared copy of any of them.

    Args:
        tensors: gradients of any float dtype and shape (float64 ones are reduced in float64 first).

    Returns:
        A float32 scalar.
    """
    local = [t.to_local() if isinstance(t, DTensor) else t for t in tensors]
    norms = [torch.linalg.vector_norm(t, dtype=torch.promote_types(t.dtype, torch.float32)).float() for t in local]
    return torch.stack(norms).pow(2).sum()
