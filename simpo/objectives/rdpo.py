"""R-DPO (Park, Rafailov, Ermon and Finn, "Disentangling Length from Quality in Direct Preference
Optimization", arXiv 2403.19159)."""

from __future__ import annotations

from simpo.objectives.base import Objective, ObjectiveOutput, PairLogps
from simpo.objectives.terms import check_label_smoothing, check_non_negative, check_positive, sigmoid_loss


class RDPO(Objective):
    """R-DPO: ``-log sigmoid(beta * log pi(y_w)/pi_ref(y_w) - beta * log pi(y_l)/pi_ref(y_l) + alpha*(|y_w| - |y_l|))``.

    DPO on a length-penalised reward: the policy maximises ``r(x, y) - alpha*|y|`` under the KL constraint,
    so ``r = beta * log pi/pi_ref + alpha*|y|`` (+ a prompt constant) and the Bradley-Terry argument gains
    ``+alpha*(|y_w| - |y_l|)`` (the paper's objective; the SimPO paper's Table 3 writes the same ``+`` sign). A
    longer chosen response thus gets part of its preference "explained" by its length, and the policy is
    pushed less to raise its likelihood: length is not learned as quality. ``log pi`` are summed log-probs,
    ``|y|`` labelled-token counts. ``label_smoothing`` gives the conservative (cDPO) loss on the same argument.

    Note: issue 12's summary writes the length term with a minus sign; that would reward length instead of
    penalising it (for ``alpha`` > 0), which is neither paper's objective.

    Args:
        beta: KL-regularisation strength / reward scale (> 0).
        alpha: length-penalty weight per token (>= 0; 0 is DPO).
        label_smoothing: cDPO's eps in [0, 0.5).

    Rewards: ``beta * log pi(y)/pi_ref(y)`` (B,), DPO's implicit reward (without the length term).
    """

    needs_reference = True
    needs_kl_pairs = False

    def __init__(self, beta: float = 0.01, alpha: float = 0.05, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.beta = check_positive("beta", beta)
        self.alpha = check_non_negative("alpha", alpha)
        self.label_smoothing = check_label_smoothing(label_smoothing)

    def forward(self, stats: PairLogps) -> ObjectiveOutput:
        """Loss of the B pairs in ``stats`` (summed log-probs of policy and reference, token counts)."""
        ratio_w, ratio_l = self.reference_log_ratios(stats)  # (B,) each
        dtype = ratio_w.dtype
        length_gap = stats.chosen_tokens.to(dtype) - stats.rejected_tokens.to(dtype)  # (B,) |y_w| - |y_l|
        logits = self.beta * ratio_w - self.beta * ratio_l + self.alpha * length_gap
        losses = sigmoid_loss(logits, self.label_smoothing)
        return ObjectiveOutput(
            loss=losses.mean(),
            losses=losses,
            chosen_rewards=self.beta * ratio_w.detach(),
            rejected_rewards=self.beta * ratio_l.detach(),
        )
