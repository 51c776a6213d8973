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


def per_sequence(
    logps: torch.Tensor, vocab_mean: torch.Tensor, target_sequence: torch.Tensor, num_sequences: int
) -> SequenceLogps:
    """Sum token statistics into their sequences.

    Args:
        logps: (M,) log-prob of each scored token.
        vocab_mean: (M,) mean logit over the vocabulary at each scored token's predicting position (detached).
        target_sequence: (M,) the sequence (response) each token belongs to, in [0, num_sequences).
        num_sequences: N.

    Returns:
        ``SequenceLogps`` with (N,) fields.
    """

    def total(values: torch.Tensor) -> torch.Tensor:
        zeros = torch.zeros(num_sequences, dtype=values.dtype, device=values.device)
        return zeros.index_add(0, target_sequence, values)

    return SequenceLogps(
        logp_sum=total(logps), token_count=total(torch.ones_like(logps.detach())), logit_sum=total(vocab_mean)
    )


def target_sequence_logps(
    logits: torch.Tensor,
    target_index: torch.Tensor,
    target_ids: torch.Tensor,
    target_sequence: torch.Tensor,
    num_sequences: int,
) -> SequenceLogps:
    """Per-sequence statistics from full logits, for the scored tokens of any batch layout.

    Args:
        logits: (R, T, V) raw logits of a batch of R rows.
        target_index: (M,) positions in the flattened (R * T) batch whose logits predict ``target_ids``.
        target_ids: (M,) the scored tokens.
        target_sequence: (M,) their sequences, in [0, num_sequences).
        num_sequences: N.

    Returns:
        ``SequenceLogps`` with (N,) fields, computed in float32 at least (float64 stays float64).
    """
    rows = logits.flatten(0, 1)[target_index]  # (M, V)
    rows = rows.to(torch.promote_types(rows.dtype, torch.float32))
    logps = rows.gather(-1, target_ids[:, None]).squeeze(-1) - torch.logsumexp(rows, dim=-1)
    return per_sequence(logps, rows.detach().mean(-1), target_sequence, num_sequences)


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> SequenceLogps:
    """Per-sequence sums of labelled-token log-probs, label counts and mean logits of a padded batch.

    Args:
        logits: (N, T, V) raw logits; position t predicts token t + 1.
        labels: (N, T) labels with ``IGNORE_INDEX`` on unlabelled positions.
    """
    rows, positions, targets = labelled_positions(labels)
    return target_sequence_logps(logits, rows * labels.shape[1] + positions, targets, rows, labels.shape[0])
