"""SimPO (Meng, Xia and Chen, "SimPO: Simple Preference Optimization with a Reference-Free Reward",
arXiv 2405.14734)."""

from __future__ import annotations

from simpo.objectives.base import Objective, ObjectiveOutput, PairLogps
from simpo.objectives.terms import (
    check_finite,
    check_label_smoothing,
    check_loss_type,
    check_non_negative,
    check_positive,
    hinge_loss,
    mean_plus_nll,
    sigmoid_loss,
)


class SimPO(Objective):
    """SimPO: ``-log sigmoid(beta * (avg_w - avg_l) - gamma)`` with ``gamma = gamma_beta_ratio * beta``.

    ``avg = log pi(y | x) / |y|`` is the length-normalised log-prob of a response (mean over its labelled
    tokens), so the implicit reward ``r(x, y) = beta * avg`` needs no reference model. With
    ``z = avg_w - avg_l - gamma_beta_ratio`` (B,):

    - ``sigmoid`` (the paper): ``-(1 - eps) * log sigmoid(beta * z) - eps * log sigmoid(-beta * z)``;
    - ``hinge``: ``relu(1 - beta * z)``.

    ``sft_weight`` > 0 adds ``sft_weight * token-mean NLL of the chosen responses`` (CPO-SimPO); the paper's
    SimPO has none. The paper's ``gamma`` is ``gamma_beta_ratio * beta`` here (the authors' later convention).

    Args:
        beta: reward scale (2.0 to 10 in the released recipes).
        gamma_beta_ratio: target margin divided by beta (0 to 1; 0.5 is the authors' starting point).
        loss_type: ``sigmoid`` or ``hinge``.
        label_smoothing: eps of the conservative sigmoid loss, in [0, 0.5); sigmoid only.
        sft_weight: weight of the chosen responses' token-mean NLL (0: pure SimPO; 1: CPO-SimPO).

    Rewards: ``beta * avg`` (B,). Metrics: ``sft_loss`` () when ``sft_weight`` > 0.
    """

    needs_reference = False
    needs_kl_pairs = False

    def __init__(
        self,
        beta: float = 2.0,
        gamma_beta_ratio: float = 0.5,
        loss_type: str = "sigmoid",
        label_smoothing: float = 0.0,
        sft_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.beta = check_positive("beta", beta)
        self.gamma_beta_ratio = check_finite("gamma_beta_ratio", gamma_beta_ratio)
        self.loss_type = check_loss_type(loss_type)
        self.label_smoothing = check_label_smoothing(label_smoothing, self.loss_type)
        self.sft_weight = check_non_negative("sft_weight", sft_weight)

    def forward(self, stats: PairLogps) -> ObjectiveOutput:
        """Loss of the B pairs in ``stats`` (uses the summed log-probs and token counts only)."""
        avg_w, avg_l = stats.chosen_logp_mean, stats.rejected_logp_mean  # (B,)
        logits = self.beta * (avg_w - avg_l - self.gamma_beta_ratio)
        losses = sigmoid_loss(logits, self.label_smoothing) if self.loss_type == "sigmoid" else hinge_loss(logits)
        loss, metrics = mean_plus_nll(losses, stats, self.sft_weight)
        return ObjectiveOutput(
            loss=loss,
            losses=losses,
            chosen_rewards=self.beta * avg_w.detach(),
            rejected_rewards=self.beta * avg_l.detach(),
            metrics=metrics,
        )
