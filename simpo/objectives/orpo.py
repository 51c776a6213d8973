"""ORPO (Hong, Lee and Thorne, "ORPO: Monolithic Preference Optimization without Reference Model",
arXiv 2403.07691)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from simpo.objectives.base import Objective, ObjectiveOutput, PairLogps
from simpo.objectives.terms import check_non_negative, mean_plus_nll


def log_odds(mean_logp: torch.Tensor) -> torch.Tensor:
    """(B,) ``log(p / (1 - p))`` of ``p = exp(mean_logp)``, finite for every ``mean_logp <= 0``.

    ``log(1 - p)`` is ``log(-expm1(m))`` for ``m > -log 2`` and ``log1p(-exp(m))`` below (each branch where it
    is accurate, each fed only inputs of its own range so no branch makes inf or NaN gradients). ``m`` is capped
    at ``-eps`` of its dtype: a response whose every token has probability 1 in floating point (``m == 0``)
    would have infinite odds; it gets ``log(1/eps)``-sized odds (about 16 in float32, 36 in float64) and no
    gradient through the cap.
    """
    m = mean_logp.clamp(max=-torch.finfo(mean_logp.dtype).eps)
    near_one = torch.log(-torch.expm1(m.clamp(min=-math.log(2))))
    far_from_one = torch.log1p(-torch.exp(m.clamp(max=-math.log(2))))
    return m - torch.where(m > -math.log(2), near_one, far_from_one)


class ORPO(Objective):
    """ORPO: ``-log p(y_w) - odds_ratio_weight * log sigmoid(log odds(y_w) - log odds(y_l))``.

    ``p(y) = exp(log pi(y | x) / |y|)`` is the length-normalised likelihood and ``odds(y) = p / (1 - p)``;
    ``log odds`` is computed stably (``log_odds``). The first term is the SFT loss on the chosen responses:
    the token-mean NLL over the batch, as ORPO's code and TRL compute it (the SimPO paper's Table 3 writes
    ``-log p(y_w)``, the per-response mean, the same up to how responses of different lengths are weighted).
    The ORPO paper calls the weight lambda (0.1 in its experiments; TRL's ``beta``).

    Args:
        odds_ratio_weight: lambda, the weight of the odds-ratio term (>= 0; 0 is plain SFT).

    ``losses`` (B,) is the weighted odds-ratio term ``-lambda * log sigmoid(...)`` (the SFT term is added to
    ``loss`` once, for the batch).

    Rewards: ``log odds(y)`` (B,), so ``rewards/margins`` is the mean log odds ratio that the loss raises and
    ``rewards/accuracies`` the fraction with ``odds(y_w) > odds(y_l)``. TRL logs ``lambda * log p(y)`` instead;
    both orders pairs the same way (``log odds`` grows with ``log p``), so the accuracies agree. Metrics:
    ``sft_loss``, ``log_odds_ratio`` (mean of ``log sigmoid(log odds ratio)``, TRL's name) and
    ``log_odds_chosen`` (mean log odds ratio, TRL's name).
    """

    needs_reference = False
    needs_kl_pairs = False

    def __init__(self, odds_ratio_weight: float = 0.1) -> None:
        super().__init__()
        self.odds_ratio_weight = check_non_negative("odds_ratio_weight", odds_ratio_weight)

    def forward(self, stats: PairLogps) -> ObjectiveOutput:
        """Loss of the B pairs in ``stats`` (summed log-probs and token counts)."""
        odds_w, odds_l = log_odds(stats.chosen_logp_mean), log_odds(stats.rejected_logp_mean)  # (B,) each
        log_sigmoid_ratio = F.logsigmoid(odds_w - odds_l)
        losses = -self.odds_ratio_weight * log_sigmoid_ratio
        loss, metrics = mean_plus_nll(losses, stats, 1.0)
        metrics["log_odds_ratio"] = log_sigmoid_ratio.detach().mean()
        metrics["log_odds_chosen"] = (odds_w - odds_l).detach().mean()
        return ObjectiveOutput(
            loss=loss, losses=losses, chosen_rewards=odds_w.detach(), rejected_rewards=odds_l.detach(), metrics=metrics
        )
