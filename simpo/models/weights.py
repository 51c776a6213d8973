"""Checks on loaded weights, so that no metric is computed from NaN/Inf or freshly initialised parameters."""

from __future__ import annotations

from torch import nn

from simpo.core.finite import describe_nonfinite, nonfinite_tensors
from simpo.errors import UserError


def refuse_nonfinite(model: nn.Module, source: str) -> None:
    """Raise unless every parameter of ``model`` is finite.

    Args:
        source: where the weights came from, as ``key=value`` (``model.name_or_path=...``, ``ckpt_path=...``,
            ``judge.reward_model=...``), named in the error.

    Raises:
        ValueError: naming ``source`` and the tensors that hold a NaN or an infinity.
    """
    bad = nonfinite_tensors(model.named_parameters())
    if bad:
        raise UserError(
            f"{source}: the weights hold NaN or Inf in {describe_nonfinite(bad)}, so every number computed from "
            "them would be meaningless (a diverged training run or a corrupt file): use other weights, e.g. an earlier "
            "checkpoint"
        )
