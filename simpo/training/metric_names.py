"""What a training run logs, by name, known before it trains: the per-step metrics of the objective (``train/*`` and
``val/*``), the module's own optimizer-step metrics, and those of callbacks that declare theirs. A sweep's
``optimized_metric`` is checked against them before any run trains."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import torch

from simpo.core.logprobs import SequenceLogps
from simpo.core.metrics import reward_metrics
from simpo.errors import UserError
from simpo.objectives import Objective, ObjectiveOutput, PairLogps

STEP_METRICS = ("train/lr", "train/grad_norm", "train/skipped_steps")  # logged by the module per optimizer step


def step_metrics(out: ObjectiveOutput, chosen: SequenceLogps, rejected: SequenceLogps) -> dict[str, torch.Tensor]:
    """The metrics of one batch (logged as ``train/<name>`` and ``val/<name>``), detached () tensors.

    Args:
        out: the objective's output for the batch's P pairs.
        chosen, rejected: the policy's statistics of the P chosen and P rejected responses ((P,) fields).
    """
    return {
        "loss": out.loss.detach(),
        **reward_metrics(out.chosen_rewards, out.rejected_rewards, chosen.logp_mean, rejected.logp_mean),
        "logits/chosen": chosen.logit_sum.sum() / chosen.token_count.sum(),
        "logits/rejected": rejected.logit_sum.sum() / rejected.token_count.sum(),
        **{name: value.detach() for name, value in out.metrics.items()},
    }


def logged_metrics(objective: Objective, callbacks: Iterable[object] = ()) -> set[str]:
    """Every metric name a run with ``objective`` and ``callbacks`` logs: the objective is evaluated once on a
    made-up pair (with reference and mismatched-pair sums when it reads them) to learn its metric names; a
    callback declares its own in ``metric_names``."""
    one = torch.tensor([-4.0], dtype=torch.float64)
    tokens = torch.tensor([2.0], dtype=torch.float64)
    pair = PairLogps(one, one - 1, tokens, tokens)
    if objective.needs_reference:
        pair.ref_chosen_logp_sum, pair.ref_rejected_logp_sum = one - 0.5, one - 0.5
    if objective.needs_kl_pairs:
        pair.kl_logp_sum, pair.ref_kl_logp_sum = one.repeat(2), one.repeat(2) - 0.5
    sequences = SequenceLogps(one, tokens, one)
    with torch.no_grad():
        names = step_metrics(objective(pair), sequences, sequences)
    logged = {f"{stage}/{name}" for stage in ("train", "val") for name in names} | set(STEP_METRICS)
    for callback in callbacks:
        logged.update(getattr(callback, "metric_names", ()))
    return logged


def check_optimized_metric(name: str, logged: set[str]) -> None:
    """Refuse an ``optimized_metric`` the run will never log, before it trains (a sweep would otherwise rank runs
    on NaN after all of them trained).

    Raises:
        OptimizedMetricError: naming ``optimized_metric`` and the closest logged names.
    """
    if name in logged:
        return
    close = difflib.get_close_matches(name, sorted(logged), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    validation = sorted(n for n in logged if n.startswith("val/"))
    train_only = sorted(n for n in logged if n.startswith("train/") and f"val/{n[6:]}" not in logged)
    raise OptimizedMetricError(
        f"optimized_metric={name} is not a metric this run logs: {hint}it logs {', '.join(validation)}, "
        f"their train/ counterparts and {', '.join(train_only)}"
    )


def check_metric_has_data(name: str, has_validation: bool) -> None:
    """Refuse a ``val/`` ``optimized_metric`` when the run has no validation data (known once the data is read).

    Raises:
        OptimizedMetricError: naming ``data.test_split`` / ``data.val_size``.
    """
    if name.startswith("val/") and not has_validation:
        raise OptimizedMetricError(
            f"optimized_metric={name} is a validation metric and this run has no validation data: set "
            "data.test_split (a split of the data set) or data.val_size (rows carved out of training), or "
            "optimize a train/ metric"
        )


class OptimizedMetricError(UserError):
    """The sweep ranks runs on a metric they will not log: the same for every run of it, so the sweep stops."""
