"""SLiC-HF (Zhao et al., "SLiC-HF: Sequence Likelihood Calibration with Human Feedback", arXiv 2305.10425)."""

from __future__ import annotations

from simpo.objectives.base import Objective, ObjectiveOutput, PairLogps
from simpo.objectives.terms import check_non_negative, mean_plus_nll


class SLiC(Objective):
    """SLiC-HF: ``max(0, delta - log pi(y_w) + log pi(y_l)) - sft_weight * log pi(y_w)``.

    The rank-calibration hinge on *summed* log-probs (B,) with margin ``delta``, plus a regulariser. The
    SLiC-HF paper regularises with the NLL of the SFT target ``y_ref``; with paired data the SimPO paper
    (Table 3) uses the chosen response ``y_w`` instead, and so does this class. The regulariser is the
    token-mean NLL of the chosen responses over the batch (as for every objective here); the papers write
    ``-lambda * log pi(y_w | x)``, a per-sequence sum, so a given ``sft_weight`` weighs the NLL about
    ``1/|y_w|`` as much as the papers' lambda.

    Args:
        delta: the calibration margin (>= 0).
        sft_weight: lambda, the NLL weight (>= 0).

    Rewards: the SLiC score ``log pi(y)`` (B,), summed log-probs. Metrics: ``sft_loss`` () when
    ``sft_weight`` > 0.
    """

    needs_reference = False
    needs_kl_pairs = False

    def __init__(self, delta: float = 1.0, sft_weight: float = 1.0) -> None:
        super().__init__()
        self.delta = check_non_negative("delta", delta)
        self.sft_weight = check_non_negative("sft_weight", sft_weight)

    def forward(self, stats: PairLogps) -> ObjectiveOutput:
        """Loss of the B pairs in ``stats`` (summed log-probs and the chosen token counts)."""
        losses = (self.delta - stats.chosen_logp_sum + stats.rejected_logp_sum).clamp(min=0)  # (B,)
        loss, metrics = mean_plus_nll(losses, stats, self.sft_weight)
        return ObjectiveOutput(
            loss=loss,
            losses=losses,
            chosen_rewards=stats.chosen_logp_sum.detach(),
            rejected_rewards=stats.rejected_logp_sum.detach(),
            metrics=metrics,
        )
