"""RRHF (Yuan et al., "RRHF: Rank Responses to Align Language Models with Human Feedback without tears",
arXiv 2304.05302)."""

from __future__ import annotations

from simpo.objectives.base import Objective, ObjectiveOutput, PairLogps
from simpo.objectives.terms import check_non_negative, mean_plus_nll


class RRHF(Objective):
    """RRHF: ``max(0, -log pi(y_w)/|y_w| + log pi(y_l)/|y_l|) - sft_weight * log pi(y_w)``.

    The ranking loss on length-normalised scores ``p(y) = log pi(y | x) / |y|`` (B,): with two candidates the
    paper's sum over mis-ranked pairs is the single term above. The paper adds the fine-tuning loss on the
    best response with weight 1; the SimPO paper (Table 3) weights it with lambda (``sft_weight`` here). The
    NLL is the token-mean NLL of the chosen responses over the batch; the papers write
    ``-lambda * log pi(y_w | x)``, a per-sequence sum.

    Args:
        sft_weight: lambda, the NLL weight (>= 0; 1 in the RRHF paper).

    Rewards: the RRHF score ``log pi(y)/|y|`` (B,). Metrics: ``sft_loss`` () when ``sft_weight`` > 0.
    """

    needs_reference = False
    needs_kl_pairs = False

    def __init__(self, sft_weight: float = 1.0) -> None:
        super().__init__()
        self.sft_weight = check_non_negative("sft_weight", sft_weight)

    def forward(self, stats: PairLogps) -> ObjectiveOutput:
        """Loss of the B pairs in ``stats`` (summed log-probs and token counts)."""
        score_w, score_l = stats.chosen_logp_mean, stats.rejected_logp_mean  # (B,) each
        losses = (score_l - score_w).clamp(min=0)
        loss, metrics = mean_plus_nll(losses, stats, self.sft_weight)
        return ObjectiveOutput(
            loss=loss,
            losses=losses,
            chosen_rewards=score_w.detach(),
            rejected_rewards=score_l.detach(),
            metrics=metrics,
        )
