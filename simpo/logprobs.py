"""Per-token and per-sequence log-probabilities of labelled tokens under a causal LM."""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


@dataclass
class SequenceLogps:
    """Per-sequence statistics over the labelled (response) tokens of N sequences.

    Attributes:
        logp_sum: (N,) sum of the labelled tokens' log-probs.
        token_count: (N,) number of labelled tokens (|y|).
        logit_sum: (N,) sum over labelled positions of the vocabulary-mean raw logit (for metrics).
    """

    logp_sum: torch.Tensor
    token_count: torch.Tensor
    logit_sum: torch.Tensor

    @property
    def logp_mean(self) -> torch.Tensor:
        """(N,) length-normalised log-prob: ``logp_sum / token_count`` (the SimPO per-sequence value)."""
        return self.logp_sum / self.token_count

    def split(self, n_first: int) -> tuple[SequenceLogps, SequenceLogps]:
        """Split rows ``[:n_first]`` and ``[n_first:]`` (chosen and rejected halves of a batch)."""
        fields = (self.logp_sum, self.token_count, self.logit_sum)
        first = SequenceLogps(*(f[:n_first] for f in fields))
        rest = SequenceLogps(*(f[n_first:] for f in fields))
        return first, rest


def labelled_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where next-token labels are carried.

    Args:
        labels: (N, T) with ``IGNORE_INDEX`` on unlabelled positions.

    Returns:
        ``rows`` (M,) and ``positions`` (M,) of the predicting positions (t predicts t + 1) and
        ``targets`` (M,) the label ids, for the M labelled tokens of the batch.
    """
    targets = labels[:, 1:]
    rows, positions = (targets != IGNORE_INDEX).nonzero(as_tuple=True)
    return rows, positions, targets[rows, positions]


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each next-token label.

    Args:
        logits: (N, T, V) raw logits; position t predicts token t + 1.
        labels: (N, T) token ids, ``IGNORE_INDEX`` where no label is carried (prompt, padding).

    Returns:
        ``logps`` (N, T - 1) log pi(labels[:, t + 1] | ...) (0 where masked) and
        ``mask`` (N, T - 1) bool, true where a label is carried. Computed in float32 at least
        (float64 inputs stay float64).
    """
    shifted_logits = logits[:, :-1, :].to(torch.promote_types(logits.dtype, torch.float32))
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    safe_targets = torch.where(mask, targets, 0)
    picked = shifted_logits.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)
    logps = picked - torch.logsumexp(shifted_logits, dim=-1)
    return logps.masked_fill(~mask, 0.0), mask


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> SequenceLogps:
    """Per-sequence sums of labelled-token log-probs, label counts and mean logits.

    Args:
        logits: (N, T, V) raw logits.
        labels: (N, T) labels with ``IGNORE_INDEX`` on unlabelled positions.
    """
    logps, mask = token_logps(logits, labels)
    vocab_mean_logits = logits[:, :-1, :].detach().to(logps.dtype).mean(-1)  # (N, T - 1)
    return SequenceLogps(
        logp_sum=logps.sum(-1),
        token_count=mask.sum(-1).to(logps.dtype),
        logit_sum=(vocab_mean_logits * mask).sum(-1),
    )
