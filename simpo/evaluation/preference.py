"""The ``preference`` task: SimPO's implicit-reward metrics on held-out pairs, overall and by response length."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import torch
from tqdm import tqdm

from simpo.loss import SimPOLoss
from simpo.metrics import reward_metrics
from simpo.module import SimPOModule


@torch.no_grad()
def pair_rewards(
    module: SimPOModule, batches: Iterable[dict[str, torch.Tensor]], max_pairs: int | None = None
) -> dict[str, torch.Tensor]:
    """Per-pair statistics over ``batches`` (the same forward and data recipe as training's validation).

    Returns:
        (P,) float64 tensors: ``logps_chosen``, ``logps_rejected`` (mean log-prob), ``rewards_chosen``,
        ``rewards_rejected`` (``beta * logps``), ``length_chosen``, ``length_rejected`` (label tokens),
        ``logp_sum_chosen`` (summed log-prob, for the SFT term of CPO-SimPO).
    """
    beta = module.loss_fn.beta
    parts: dict[str, list[torch.Tensor]] = {}
    seen = 0
    for batch in tqdm(batches, desc="preference", unit="batch"):
        device = next(module.parameters()).device  # the policy's, wherever it was moved
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        chosen, rejected = module(batch)
        values = {
            "logps_chosen": chosen.logp_mean,
            "logps_rejected": rejected.logp_mean,
            "length_chosen": chosen.token_count,
            "length_rejected": rejected.token_count,
            "logp_sum_chosen": chosen.logp_sum,
        }
        for key, value in values.items():
            parts.setdefault(key, []).append(value.double().cpu())
        seen += chosen.logp_sum.shape[0]
        if max_pairs is not None and seen >= max_pairs:
            break
    out = {key: torch.cat(value)[:max_pairs] for key, value in parts.items()}
    out["rewards_chosen"] = beta * out["logps_chosen"]
    out["rewards_rejected"] = beta * out["logps_rejected"]
    return out


def preference_metrics(pairs: dict[str, torch.Tensor], loss: SimPOLoss, buckets: Sequence[int]) -> dict[str, float]:
    """Flat metrics: ``rewards/{accuracies,margins,chosen,rejected}``, ``logps/{chosen,rejected}``, ``loss``,
    ``pairs``, and per bucket of the pair's mean response length (label tokens, edges ``buckets``)
    ``length/<lo>-<hi>/{pairs,accuracies,margins}``."""
    margins = pairs["rewards_chosen"] - pairs["rewards_rejected"]
    metrics = {
        "pairs": float(margins.numel()),
        "loss": float(
            loss(pairs["logps_chosen"], pairs["logps_rejected"], pairs["logp_sum_chosen"], pairs["length_chosen"]).loss
        ),
    }
    shared = reward_metrics(pairs["rewards_chosen"], pairs["rewards_rejected"], pairs["logps_chosen"],
                            pairs["logps_rejected"])  # fmt: skip
    metrics.update({name: float(value) for name, value in shared.items()})
    lengths = (pairs["length_chosen"] + pairs["length_rejected"]) / 2
    edges = [0, *sorted(buckets), float("inf")]
    for lo, hi in itertools.pairwise(edges):
        inside = (lengths >= lo) & (lengths < hi)
        if not inside.any():
            continue
        name = f"length/{lo}-{'inf' if hi == float('inf') else int(hi)}"
        metrics[f"{name}/pairs"] = float(inside.sum())
        metrics[f"{name}/accuracies"] = float((margins[inside] > 0).double().mean())
        metrics[f"{name}/margins"] = float(margins[inside].mean())
    return metrics
