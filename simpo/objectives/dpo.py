"""DPO (Rafailov et al., "Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
arXiv 2305.18290), with cDPO's label smoothing and the hinge variant."""

from __future__ import annotations

from simpo.objectives.base import Objective, ObjectiveOutput, PairLogps
from simpo.objectives.terms import check_label_smoothing, check_loss_type, check_positive, hinge_loss, sigmoid_loss


class DPO(Objective):
    """DPO: ``-log sigmoid(beta * log pi(y_w)/pi_ref(y_w) - beta * log pi(y_l)/pi_ref(y_l))``.

    ``log pi(y | x)`` is the *summed* log-prob of a response's labelled tokens and ``pi_ref`` the frozen
    reference (usually the SFT model). With ``h = log pi(y_w)/pi_ref(y_w) - log pi(y_l)/pi_ref(y_l)`` (B,):

    - ``sigmoid`` (the paper, eq. 7): ``-(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h)``;
      eps = ``label_smoothing`` > 0 is cDPO (Mitchell, "A note on DPO with noisy preferences", 2023);
    - ``hinge``: ``relu(1 - beta * h)`` (SLiC's hinge on the reference-normalised likelihoods, as in RSO,
      arXiv 2309.06657, and TRL's ``loss_type="hinge"``).

    The SimPO paper (Table 3) writes the same formula as the DPO paper.

    Args:
        beta: KL-regularisation strength / reward scale (the SimPO study's best was 0.01 in all six settings;
            the DPO paper and TRL default to 0.1).
        label_smoothing: cDPO's eps in [0, 0.5); sigmoid only.
        loss_type: ``sigmoid`` or ``hinge``.

    Rewards: ``beta * log pi(y)/pi_ref(y)`` (B,).
    """

    needs_reference = True
    needs_kl_pairs = False

    def __init__(self, beta: float = 0.01, label_smoothing: float = 0.0, loss_type: str = "sigmoid") -> None:
        super().__init__()
        self.beta = check_positive("beta", beta)
        self.loss_type = check_loss_type(loss_type)
        self.label_smoothing = check_label_smoothing(label_smoothing, self.loss_type)

    def forward(self, stats: PairLogps) -> ObjectiveOutput:
        """Loss of the B pairs in ``stats`` (summed log-probs of the policy and the reference)."""
        ratio_w, ratio_l = self.reference_log_ratios(stats)  # (B,) each
        logits = self.beta * (ratio_w - ratio_l)
        losses = sigmoid_loss(logits, self.label_smoothing) if self.loss_type == "sigmoid" else hinge_loss(logits)
        return ObjectiveOutput(
            loss=losses.mean(),
            losses=losses,
            chosen_rewards=self.beta * ratio_w.detach(),
            rejected_rewards=self.beta * ratio_l.detach(),
        )
