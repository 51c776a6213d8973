"""The ``preference`` task: the objective's implicit-reward metrics on held-out pairs, overall and by length."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import torch
from tqdm import tqdm
from transformers import PreTrainedModel

from simpo.core.metrics import reward_metrics
from simpo.objectives import Objective, ObjectiveOutput, PairLogps
from simpo.reference.provider import ReferenceProvider
from simpo.scoring import Scorer


@torch.no_grad()
def pair_rewards(
    scorer: Scorer,
    policy: PreTrainedModel,
    objective: Objective,
    batches: Iterable[dict[str, torch.Tensor]],
    reference: ReferenceProvider | None = None,
    max_pairs: int | None = None,
) -> dict[str, torch.Tensor]:
    """Per-pair statistics over ``batches`` (the same scoring forward, reference and data recipe as training's
    validation: ``scorer`` with ``policy``, prepared by ``Scorer.attach``; ``reference`` prepared when the objective
    needs one), and the implicit rewards of ``objective``.

    Returns:
        (P,) float64 tensors: ``logp_sum_chosen``, ``logp_sum_rejected`` (summed log-probs), ``logps_chosen``,
        ``logps_rejected`` (mean log-probs), ``length_chosen``, ``length_rejected`` (label tokens), with a reference
        ``ref_logp_sum_chosen`` / ``ref_logp_sum_rejected``, with KTO ``kl_logp_sum`` / ``ref_kl_logp_sum``; and
        ``rewards_chosen`` / ``rewards_rejected``, the objective's implicit rewards (SimPO: ``beta * logps``).
    """
    fields = {"logp_sum_chosen": "chosen_logp_sum", "logp_sum_rejected": "rejected_logp_sum",
              "length_chosen": "chosen_tokens", "length_rejected": "rejected_tokens",
              "ref_logp_sum_chosen": "ref_chosen_logp_sum", "ref_logp_sum_rejected": "ref_rejected_logp_sum",
              "kl_logp_sum": "kl_logp_sum", "ref_kl_logp_sum": "ref_kl_logp_sum"}  # fmt: skip
    parts: dict[str, list[torch.Tensor]] = {}
    seen = 0
    for batch in tqdm(batches, desc="preference", unit="batch"):
        device = next(policy.parameters()).device  # the policy's, wherever it was moved
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        stats, _, _ = scorer.pair_logps(policy, batch, reference.sums if reference is not None else None)
        for key, name in fields.items():
            value = getattr(stats, name)
            if value is not None:
                parts.setdefault(key, []).append(value.double().cpu())
        seen += stats.chosen_logp_sum.shape[0]
        if max_pairs is not None and seen >= max_pairs:
            break
    out = {key: torch.cat(value) for key, value in parts.items()}
    out = {key: value if key.startswith(("kl_", "ref_kl_")) else value[:max_pairs] for key, value in out.items()}
    out["logps_chosen"] = out["logp_sum_chosen"] / out["length_chosen"]
    out["logps_rejected"] = out["logp_sum_rejected"] / out["length_rejected"]
    result = objective_output(objective, out)
    out["rewards_chosen"], out["rewards_rejected"] = result.chosen_rewards, result.rejected_rewards
    return out


def objective_output(objective: Objective, pairs: dict[str, torch.Tensor]) -> ObjectiveOutput:
    """The objective over all the evaluated pairs at once (``pair_rewards``'s statistics)."""
    stats = PairLogps(
        pairs["logp_sum_chosen"], pairs["logp_sum_rejected"], pairs["length_chosen"], pairs["length_rejected"],
        pairs.get("ref_logp_sum_chosen"), pairs.get("ref_logp_sum_rejected"), pairs.get("kl_logp_sum"),
        pairs.get("ref_kl_logp_sum"),
    )  # fmt: skip
    return objective(stats)


def preference_metrics(pairs: dict[str, torch.Tensor], loss: Objective, buckets: Sequence[int]) -> dict[str, float]:
    """Flat metrics: ``rewards/{accuracies,margins,chosen,rejected}``, ``logps/{chosen,rejected}``, ``loss``,
    ``pairs``, and per bucket of the pair's mean response length (label tokens, edges ``buckets``)
    ``length/<lo>-<hi>/{pairs,accuracies,margins}``."""
    margins = pairs["rewards_chosen"] - pairs["rewards_rejected"]
    metrics = {
        "pairs": float(margins.numel()),
        "loss": float(objective_output(loss, pairs).loss),
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
