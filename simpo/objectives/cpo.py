"""CPO (Xu et al., "Contrastive Preference Optimization: Pushing the Boundaries of LLM Performance in Machine
Translation", arXiv 2401.08417)."""

from __future__ import annotations

from simpo.objectives.base import Objective, ObjectiveOutput, PairLogps
from simpo.objectives.terms import (
    check_label_smoothing,
    check_non_negative,
    check_positive,
    mean_plus_nll,
    sigmoid_loss,
)


class CPO(Objective):
    """CPO: ``-log sigmoid(beta * log pi(y_w) - beta * log pi(y_l)) - sft_weight * log pi(y_w)``.

    DPO with a uniform reference (no reference model), plus a behaviour-cloning NLL on the chosen responses.
    The preference term uses *summed* log-probs (B,); ``label_smoothing`` eps gives the conservative loss
    ``-(1 - eps) * log sigmoid(x) - eps * log sigmoid(-x)``, as TRL's CPOTrainer does. The NLL term is the
    token-mean NLL of the chosen responses over the batch (what CPO's and TRL's code compute, a causal-LM
    cross-entropy); the CPO paper and the SimPO paper (Table 3) write it as ``-lambda * log pi(y_w | x)``, a
    per-sequence sum, with lambda = 1 in the CPO paper.

    Args:
        beta: reward scale (> 0; the CPO paper and TRL use 0.1).
        sft_weight: lambda, the NLL weight (>= 0; 1.0 in the CPO paper and the SimPO study).
        label_smoothing: eps in [0, 0.5).

    Rewards: ``beta * log pi(y)`` (B,), summed log-probs (TRL's CPO rewards). Metrics: ``sft_loss`` () when
    ``sft_weight`` > 0.
    """

    needs_reference = False
    needs_kl_pairs = False

    def __init__(self, beta: float = 0.1, sft_weight: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.beta = check_positive("beta", beta)
        self.sft_weight = check_non_negative("sft_weight", sft_weight)
        self.label_smoothing = check_label_smoothing(label_smoothing)

    def forward(self, stats: PairLogps) -> ObjectiveOutput:
        """Loss of the B pairs in ``stats`` (summed log-probs and the chosen token counts)."""
        logits = self.beta * stats.chosen_logp_sum - self.beta * stats.rejected_logp_sum  # (B,)
        losses = sigmoid_loss(logits, self.label_smoothing)
        loss, metrics = mean_plus_nll(losses, stats, self.sft_weight)
        return ObjectiveOutput(
            loss=loss,
            losses=losses,
            chosen_rewards=self.beta * stats.chosen_logp_sum.detach(),
            rejected_rewards=self.beta * stats.rejected_logp_sum.detach(),
            metrics=metrics,
        )
