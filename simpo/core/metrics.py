"""The preference metrics every SimPO dashboard shows, defined once for training, validation and evaluate.py."""

from __future__ import annotations

import torch


def reward_metrics(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Means over pairs of the implicit rewards and the length-normalised log-probs.

    Args:
        chosen_rewards, rejected_rewards: (B,) implicit rewards ``beta * mean log-prob`` of each response.
        chosen_logps, rejected_logps: (B,) mean log-prob over each response's labelled tokens.

    Returns:
        () tensors (detached): ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins`` (mean of
        chosen - rejected), ``rewards/accuracies`` (fraction with chosen > rejected), ``logps/chosen``,
        ``logps/rejected``.
    """
    chosen_rewards, rejected_rewards = chosen_rewards.detach(), rejected_rewards.detach()
    return {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).to(chosen_rewards.dtype).mean(),
        "logps/chosen": chosen_logps.detach().mean(),
        "logps/rejected": rejected_logps.detach().mean(),
    }
