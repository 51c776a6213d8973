"""IPO (Azar et al., "A General Theoretical Paradigm to Understand Learning from Human Preferences",
arXiv 2310.12036)."""

from __future__ import annotations

from simpo.objectives.base import Objective, ObjectiveOutput, PairLogps
from simpo.objectives.terms import check_positive


class IPO(Objective):
    """IPO: ``(log pi(y_w)/pi_ref(y_w) - log pi(y_l)/pi_ref(y_l) - 1/(2*tau))^2``.

    The squared regression of the reference-normalised log-likelihood margin ``h`` (B,) onto ``1/(2*tau)``
    (the paper's sampled IPO loss). As in the IPO paper and the SimPO paper (Table 3, which writes the
    same formula), ``log pi(y | x)`` is the *summed* log-prob of a response. TRL's ``loss_type="ipo"`` differs:
    it divides each log-prob by its response length first (a per-token margin, so ``tau`` is on another
    scale there); this implementation follows the papers.

    Args:
        tau: regularisation strength (> 0); the target margin is ``1/(2*tau)``.

    Rewards: ``tau * log pi(y)/pi_ref(y)`` (B,): the reward of which the IPO-regularised policy is optimal, as
    TRL logs it (``beta`` there is ``tau``). Their margin is ``tau * h``, so accuracy is ``h > 0``.
    """

    needs_reference = True
    needs_kl_pairs = False

    def __init__(self, tau: float = 0.1) -> None:
        super().__init__()
        self.tau = check_positive("tau", tau)

    def forward(self, stats: PairLogps) -> ObjectiveOutput:
        """Loss of the B pairs in ``stats`` (summed log-probs of the policy and the reference)."""
        ratio_w, ratio_l = self.reference_log_ratios(stats)  # (B,) each
        losses = (ratio_w - ratio_l - 1 / (2 * self.tau)) ** 2
        return ObjectiveOutput(
            loss=losses.mean(),
            losses=losses,
            chosen_rewards=self.tau * ratio_w.detach(),
            rejected_rewards=self.tau * ratio_l.detach(),
        )
