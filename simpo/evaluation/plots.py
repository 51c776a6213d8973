"""PNG plots where a person would rather look than read numbers."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch


def reward_histogram(pairs: dict[str, torch.Tensor], path: Path) -> Path:
    """Histograms of the chosen and rejected rewards (overlaid) and of the per-pair margins."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.hist(pairs["rewards_chosen"].numpy(), bins=40, alpha=0.6, label="chosen")
    left.hist(pairs["rewards_rejected"].numpy(), bins=40, alpha=0.6, label="rejected")
    left.set(title="implicit reward (beta x mean log-prob)", xlabel="reward", ylabel="pairs")
    left.legend()
    margins = (pairs["rewards_chosen"] - pairs["rewards_rejected"]).numpy()
    right.hist(margins, bins=40, color="tab:green")
    right.axvline(0.0, color="black", linewidth=1)
    right.set(title=f"margin (chosen - rejected); {(margins > 0).mean():.1%} > 0", xlabel="margin", ylabel="pairs")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def training_curves(metrics_csv: Path, path: Path) -> Path:
    """Loss, reward margin and reward accuracy against the step, train and val, from a run's ``metrics.csv``."""
    with metrics_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    for axis, stat in zip(axes, ["loss", "rewards/margins", "rewards/accuracies"], strict=True):
        for stage, style in (("train", "-"), ("val", "o-")):
            points = [(int(r["step"]), float(r[f"{stage}/{stat}"])) for r in rows if r.get(f"{stage}/{stat}")]
            if points:
                axis.plot(*zip(*points, strict=True), style, label=stage)
        axis.set(title=stat, xlabel="step")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
