"""The SimPO objective (Meng, Xia and Chen, "SimPO: Simple Preference Optimization with a
Reference-Free Reward", arXiv 2405.14734)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class SimPOLossOutput:
    """What one call of ``SimPOLoss`` returns.

    Attributes:
        loss: () mean over pairs of the preference loss, plus ``sft_weight * sft_loss``.
        losses: (B,) per-pair preference loss (without the SFT term).
        chosen_rewards: (B,) ``beta * mean log-prob`` of the chosen responses (detached).
        rejected_rewards: (B,) the same for the rejected responses (detached).
        sft_loss: () token-mean NLL of the chosen responses, or ``None`` when ``sft_weight == 0``.
    """

    loss: torch.Tensor
    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    sft_loss: torch.Tensor | None


class SimPOLoss(nn.Module):
    """SimPO: ``-log sigmoid(beta * (avg_w - avg_l) - gamma)`` with ``gamma = gamma_beta_ratio * beta``.

    ``avg`` is the length-normalised log-prob of a response (mean over its labelled tokens), so the
    implicit reward ``r(x, y) = beta * avg`` needs no reference model.

    Args:
        beta: reward scale (2.0 to 10 in the released recipes).
        gamma_beta_ratio: target margin divided by beta (0 to 1; 0.5 is the authors' starting point).
        loss_type: ``sigmoid`` (the paper) or ``hinge`` (``relu(1 - beta * z)``).
        label_smoothing: eps of the conservative sigmoid loss,
            ``-(1 - eps) * logsigmoid(beta * z) - eps * logsigmoid(-beta * z)``; sigmoid only.
        sft_weight: weight of the chosen responses' token-mean NLL added to the loss (0: pure SimPO;
            1: CPO-SimPO as TRL defaults to).
    """

    def __init__(
        self,
        beta: float = 2.0,
        gamma_beta_ratio: float = 0.5,
        loss_type: Literal["sigmoid", "hinge"] = "sigmoid",
        label_smoothing: float = 0.0,
        sft_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if loss_type not in ("sigmoid", "hinge"):
            raise ValueError(f"loss.loss_type must be sigmoid or hinge, not {loss_type!r}")
        if not 0.0 <= label_smoothing < 0.5:
            raise ValueError(f"loss.label_smoothing must be in [0, 0.5), not {label_smoothing}")
        if loss_type == "hinge" and label_smoothing:
            raise ValueError("loss.label_smoothing only applies to loss.loss_type=sigmoid; set it to 0")
        if beta <= 0 or sft_weight < 0:
            raise ValueError(f"loss.beta must be > 0 and loss.sft_weight >= 0 (got {beta}, {sft_weight})")
        self.beta = beta
        self.gamma_beta_ratio = gamma_beta_ratio
        self.loss_type = loss_type
        self.label_smoothing = label_smoothing
        self.sft_weight = sft_weight

    def forward(
        self,
        chosen_logps: torch.Tensor,
        rejected_logps: torch.Tensor,
        chosen_logp_sum: torch.Tensor | None = None,
        chosen_token_count: torch.Tensor | None = None,
    ) -> SimPOLossOutput:
        """Compute the loss of B pairs.

        Args:
            chosen_logps: (B,) mean log-prob over each chosen response's labelled tokens.
            rejected_logps: (B,) the same for the rejected responses.
            chosen_logp_sum: (B,) summed log-probs of the chosen responses (needed when sft_weight > 0).
            chosen_token_count: (B,) labelled-token counts of the chosen responses (ditto).
        """
        z = chosen_logps - rejected_logps - self.gamma_beta_ratio
        if self.loss_type == "sigmoid":
            eps = self.label_smoothing
            losses = -(1 - eps) * F.logsigmoid(self.beta * z) - eps * F.logsigmoid(-self.beta * z)
        else:
            losses = torch.relu(1 - self.beta * z)
        loss = losses.mean()
        sft_loss = None
        if self.sft_weight > 0:
            if chosen_logp_sum is None or chosen_token_count is None:
                raise ValueError("sft_weight > 0 needs chosen_logp_sum and chosen_token_count")
            sft_loss = -chosen_logp_sum.sum() / chosen_token_count.sum()
            loss = loss + self.sft_weight * sft_loss
        return SimPOLossOutput(
            loss=loss,
            losses=losses,
            chosen_rewards=self.beta * chosen_logps.detach(),
            rejected_rewards=self.beta * rejected_logps.detach(),
            sft_loss=sft_loss,
        )
