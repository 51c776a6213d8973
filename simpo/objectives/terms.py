"""Loss terms and key checks shared by several objectives (each written once)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from simpo.core.value_checks import check_number, check_one_of
from simpo.errors import UserError
from simpo.objectives.base import PairLogps


def chosen_nll(stats: PairLogps) -> torch.Tensor:
    """() token-mean NLL of the chosen responses over the batch: ``-sum(log pi(y_w)) / sum(|y_w|)``.

    A mean over all chosen tokens of the batch (not a mean of per-response means), as a causal-LM
    cross-entropy over the chosen responses computes it.
    """
    return -stats.chosen_logp_sum.sum() / stats.chosen_tokens.to(stats.chosen_logp_sum.dtype).sum()


def mean_plus_nll(
    losses: torch.Tensor, stats: PairLogps, sft_weight: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """() ``losses.mean() + sft_weight * chosen_nll(stats)`` and the metrics ``{"sft_loss": NLL}`` (detached);
    with ``sft_weight`` 0 just the mean and no metric (the NLL is not computed).

    Args:
        losses: (B,) per-pair preference losses.
        stats: the pairs' statistics (the chosen summed log-probs and token counts are read).
        sft_weight: weight of the NLL term (>= 0).
    """
    loss = losses.mean()
    if not sft_weight:
        return loss, {}
    sft_loss = chosen_nll(stats)
    return loss + sft_weight * sft_loss, {"sft_loss": sft_loss.detach()}


def sigmoid_loss(logits: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """(B,) ``-(1 - eps) * log sigmoid(logits) - eps * log sigmoid(-logits)`` (eps = 0: the plain logistic loss).

    ``eps`` > 0 is the conservative loss of cDPO (Mitchell, "A note on DPO with noisy preferences", 2023): the
    label is taken to be flipped with probability eps.
    """
    losses = -F.logsigmoid(logits)
    if label_smoothing:
        losses = (1 - label_smoothing) * losses - label_smoothing * F.logsigmoid(-logits)
    return losses


def hinge_loss(logits: torch.Tensor) -> torch.Tensor:
    """(B,) ``relu(1 - logits)`` (the hinge of SLiC, arXiv 2305.10425, and RSO, arXiv 2309.06657)."""
    return torch.relu(1 - logits)


def check_positive(key: str, value: Any) -> float:
    """``value`` as a float if it is a finite number > 0, else ``ValueError`` naming ``loss.<key>``."""
    return check_number(f"loss.{key}", value, "a number > 0", lambda v: v > 0)


def check_non_negative(key: str, value: Any) -> float:
    """``value`` as a float if it is a finite number >= 0."""
    return check_number(f"loss.{key}", value, "a number >= 0", lambda v: v >= 0)


def check_finite(key: str, value: Any) -> float:
    """``value`` as a float if it is a finite number."""
    return check_number(f"loss.{key}", value, "a finite number")


def check_label_smoothing(value: Any, loss_type: str = "sigmoid") -> float:
    """``loss.label_smoothing`` in [0, 0.5), and 0 unless ``loss_type`` is sigmoid."""
    eps = check_number("loss.label_smoothing", value, "a number in [0, 0.5)", lambda v: 0 <= v < 0.5)
    if eps and loss_type != "sigmoid":
        raise UserError(f"loss.label_smoothing only applies to loss.loss_type=sigmoid, not {loss_type!r}; set it to 0")
    return eps


def check_loss_type(value: Any) -> str:
    """``loss.loss_type``: ``sigmoid`` or ``hinge``."""
    return check_one_of("loss.loss_type", value, ("sigmoid", "hinge"))
