"""PNG plots where a person would rather look than read numbers."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes

from simpo.io import atomic_file


def finite_part(values: np.ndarray) -> tuple[np.ndarray, int]:
    """The finite entries of ``values`` (shape (N,)) and how many NaN/Inf entries were left out."""
    keep = np.isfinite(values)
    return values[keep], int((~keep).sum())


def with_left_out(title: str, left_out: int) -> str:
    """``title``, noting how many non-finite values the plot leaves out (unchanged when none)."""
    return title if left_out == 0 else f"{title}\n({left_out} non-finite value{'s' if left_out != 1 else ''} left out)"


def reward_histogram(pairs: dict[str, torch.Tensor], path: Path) -> Path:
    """Histograms of the chosen and rejected rewards (overlaid) and of the per-pair margins; (P,) tensors
    ``rewards_chosen`` and ``rewards_rejected``. Non-finite values are left out and counted in the titles."""
    chosen, rejected = pairs["rewards_chosen"].double().numpy(), pairs["rewards_rejected"].double().numpy()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left_out = 0
    for values, label in ((chosen, "chosen"), (rejected, "rejected")):
        finite, dropped = finite_part(values)
        left.hist(finite, bins=40, alpha=0.6, label=label)
        left_out += dropped
    left.set(title=with_left_out("implicit reward (beta x mean log-prob)", left_out), xlabel="reward", ylabel="pairs")
    left.legend()
    with np.errstate(invalid="ignore"):  # inf - inf
        margins, dropped = finite_part(chosen - rejected)
    right.hist(margins, bins=40, color="tab:green")
    right.axvline(0.0, color="black", linewidth=1)
    above = f"{(margins > 0).mean():.1%} > 0" if margins.size else "no finite margin"
    right.set(title=with_left_out(f"margin (chosen - rejected); {above}", dropped), xlabel="margin", ylabel="pairs")
    return _save(figure, path)


def _number(text: str | None) -> float | None:
    """A CSV cell as a float: ``None`` for an empty cell, NaN for text that is no number."""
    if text is None or not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        return math.nan


def _plot_curve(axis: Axes, rows: Sequence[dict[str, str]], column: str, style: str, label: str) -> int:
    """Plot ``column`` against ``step`` on ``axis`` (finite points only); returns the points left out."""
    points, left_out = [], 0
    for row in rows:
        step, value = _number(row.get("step")), _number(row.get(column))
        if value is None:
            continue
        if step is None or not math.isfinite(step) or not math.isfinite(value):
            left_out += 1
        else:
            points.append((step, value))
    if points:
        axis.plot(*zip(*points, strict=True), style, label=label)
    return left_out


def training_curves(metrics_csv: Path, path: Path) -> Path:
    """Loss, reward margin and reward accuracy against the step, train and val, from a run's ``metrics.csv``.
    Empty cells are skipped; NaN, Inf and unreadable values are left out and counted in the titles."""
    with metrics_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    for axis, stat in zip(axes, ["loss", "rewards/margins", "rewards/accuracies"], strict=True):
        left_out = sum(_plot_curve(axis, rows, f"{stage}/{stat}", style, stage)
                       for stage, style in (("train", "-"), ("val", "o-")))  # fmt: skip
        axis.set(title=with_left_out(stat, left_out), xlabel="step")
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    return _save(figure, path)


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    with atomic_file(path, "wb") as handle:
        figure.savefig(handle, dpi=100, format=path.suffix.lstrip(".") or "png")
    plt.close(figure)
    return path
