"""What every preference objective takes and returns, and the interface it implements.

An objective sees only per-pair statistics (``PairLogps``): never the batch layout, the model or the reference.
It declares what it needs (``needs_reference``, ``needs_kl_pairs``) and the module provides it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class PairLogps:
    """Per-pair statistics of B preference pairs (chosen ``w``, rejected ``l``).

    Attributes:
        chosen_logp_sum: (B,) summed log-probs ``log pi(y_w | x)`` of the chosen responses' labelled tokens.
        rejected_logp_sum: (B,) the same for the rejected responses.
        chosen_tokens: (B,) labelled-token counts ``|y_w|`` (float or integer dtype; every count >= 1).
        rejected_tokens: (B,) ``|y_l|``.
        ref_chosen_logp_sum: (B,) ``log pi_ref(y_w | x)`` under the reference model, or ``None`` without one.
        ref_rejected_logp_sum: (B,) ``log pi_ref(y_l | x)``, or ``None``.
        kl_logp_sum: (K,) KTO only: summed policy log-probs of K mismatched (prompt_i, response_j) sequences
            (usually K = B), or ``None``.
        ref_kl_logp_sum: (K,) KTO only: the same sequences under the reference, or ``None``.
    """

    chosen_logp_sum: torch.Tensor
    rejected_logp_sum: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor
    ref_chosen_logp_sum: torch.Tensor | None = None
    ref_rejected_logp_sum: torch.Tensor | None = None
    kl_logp_sum: torch.Tensor | None = None
    ref_kl_logp_sum: torch.Tensor | None = None

    @property
    def chosen_logp_mean(self) -> torch.Tensor:
        """(B,) length-normalised log-prob ``log pi(y_w | x) / |y_w|`` of the chosen responses."""
        return self.chosen_logp_sum / self.chosen_tokens.to(self.chosen_logp_sum.dtype)

    @property
    def rejected_logp_mean(self) -> torch.Tensor:
        """(B,) ``log pi(y_l | x) / |y_l|``."""
        return self.rejected_logp_sum / self.rejected_tokens.to(self.rejected_logp_sum.dtype)


@dataclass
class ObjectiveOutput:
    """What one call of an ``Objective`` returns for B pairs.

    Attributes:
        loss: () the value to backpropagate: mean over pairs of ``losses`` plus any NLL term.
        losses: (B,) per-pair preference loss (without the NLL term).
        chosen_rewards: (B,) the objective's implicit reward of each chosen response (detached).
        rejected_rewards: (B,) the same for the rejected responses (detached).
        metrics: extra detached () scalars by name, e.g. ``sft_loss``, ``kl``, ``log_odds_ratio``.
    """

    loss: torch.Tensor
    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


class Objective(nn.Module):
    """A preference objective over per-pair statistics.

    Subclasses set the class attributes and implement ``forward``; their constructors validate every key and
    raise ``ValueError`` naming it as ``loss.<key>``.

    Attributes:
        needs_reference: the objective reads ``ref_chosen_logp_sum`` / ``ref_rejected_logp_sum``.
        needs_kl_pairs: the objective reads ``kl_logp_sum`` / ``ref_kl_logp_sum`` (mismatched pairs; KTO).
    """

    needs_reference: bool = False
    needs_kl_pairs: bool = False

    def forward(self, stats: PairLogps) -> ObjectiveOutput:  # pragma: no cover - interface
        """Loss, per-pair losses, implicit rewards and metrics of the pairs in ``stats``."""
        raise NotImplementedError

    def reference_log_ratios(self, stats: PairLogps) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) ``log pi(y_w)/pi_ref(y_w)`` and (B,) ``log pi(y_l)/pi_ref(y_l)``; an error without a reference."""
        if stats.ref_chosen_logp_sum is None or stats.ref_rejected_logp_sum is None:
            raise ValueError(
                f"{type(self).__name__} needs the reference log-probs ref_chosen_logp_sum and ref_rejected_logp_sum"
            )
        return stats.chosen_logp_sum - stats.ref_chosen_logp_sum, stats.rejected_logp_sum - stats.ref_rejected_logp_sum
