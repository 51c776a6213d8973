"""KTO (Ethayarajh et al., "KTO: Model Alignment as Prospect Theoretic Optimization", arXiv 2402.01306)."""

from __future__ import annotations

import torch

from simpo.objectives.base import Objective, ObjectiveOutput, PairLogps
from simpo.objectives.terms import check_positive


class KTO(Objective):
    """KTO on paired data: each pair is one desirable (chosen) and one undesirable (rejected) example.

    With ``r(y) = log pi(y)/pi_ref(y)`` (summed log-probs, (B,)) and the reference point
    ``z0 = max(0, mean_k(log pi(y'_k | x_k) - log pi_ref(y'_k | x_k)))`` (detached), a batch estimate of
    ``KL(pi || pi_ref)`` from K mismatched (prompt, response) pairs (``kl_logp_sum``, ``ref_kl_logp_sum``):

        loss_w = desirable_weight   * (1 - sigmoid(beta * (r(y_w) - z0)))
        loss_l = undesirable_weight * (1 - sigmoid(beta * (z0 - r(y_l))))
        losses = (loss_w + loss_l) / 2                                      # (B,)

    This is the KTO paper's ``lambda_y - v(x, y)`` with ``beta`` multiplying inside the sigmoid, around
    ``r - z0``, and the loss is the mean over the 2B examples (as TRL's KTOTrainer, which also computes ``z0``
    as above, on its own mismatched pairs). The SimPO paper's Table 3, as issue 12 quotes it, writes
    ``-lambda_w * sigmoid(beta * r(y_w) - z_ref) + lambda_l * sigmoid(z_ref - beta * r(y_l))`` with
    ``z_ref = beta * KL``: the same ``beta`` placement (``beta * z0 = z_ref``), but without the constants
    ``lambda_y`` (no effect on gradients), summed over the two examples of a pair (twice the scale of the mean
    here), and with ``+`` on the undesirable term where the KTO paper's ``lambda_U - lambda_U * sigmoid(...)``
    has ``-``: taken literally, that sign would push the rejected responses' likelihood up.

    ``z0`` is estimated from the K mismatched pairs this call receives (one micro-batch on one process); it
    carries no gradient.

    Args:
        beta: reward scale / KL strength (> 0).
        desirable_weight: lambda_D, the weight of the chosen examples (> 0).
        undesirable_weight: lambda_U, the weight of the rejected examples (> 0). The paper advises
            ``lambda_D * n_D / (lambda_U * n_U)`` in [1, 4/3]; paired data has ``n_D == n_U``.

    Rewards: ``beta * r(y)`` (B,). Metrics: ``kl`` () the estimate ``z0``.
    """

    needs_reference = True
    needs_kl_pairs = True

    def __init__(self, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> None:
        super().__init__()
        self.beta = check_positive("beta", beta)
        self.desirable_weight = check_positive("desirable_weight", desirable_weight)
        self.undesirable_weight = check_positive("undesirable_weight", undesirable_weight)

    def forward(self, stats: PairLogps) -> ObjectiveOutput:
        """Loss of the B pairs in ``stats`` (summed log-probs of policy and reference, and the K mismatched
        pairs' summed log-probs under both)."""
        ratio_w, ratio_l = self.reference_log_ratios(stats)  # (B,) each
        if stats.kl_logp_sum is None or stats.ref_kl_logp_sum is None:
            raise ValueError("KTO needs the mismatched pairs' log-probs kl_logp_sum and ref_kl_logp_sum")
        kl = (stats.kl_logp_sum - stats.ref_kl_logp_sum).detach().mean().clamp(min=0)  # ()
        loss_w = self.desirable_weight * (1 - torch.sigmoid(self.beta * (ratio_w - kl)))
        loss_l = self.undesirable_weight * (1 - torch.sigmoid(self.beta * (kl - ratio_l)))
        losses = (loss_w + loss_l) / 2
        return ObjectiveOutput(
            loss=losses.mean(),
            losses=losses,
            chosen_rewards=self.beta * ratio_w.detach(),
            rejected_rewards=self.beta * ratio_l.detach(),
            metrics={"kl": kl},
        )
