"""``report.json`` and ``report.png``: counts per stage and per drop reason, score distributions, and chosen vs
rejected lengths (the length bias the SimPO paper discusses: reward models tend to prefer longer responses)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from simpo.io import atomic_file
from simpo.sampling.shards import write_json_atomic


def distribution(values: Iterable[float]) -> dict[str, float]:
    """``count``, ``mean``, ``std``, ``min``, ``p25``, ``median``, ``p75``, ``max`` of the finite ``values``."""
    array = np.asarray([v for v in values if v is not None], dtype=np.float64)
    array = array[np.isfinite(array)]
    if array.size == 0:
        return {"count": 0}
    p25, median, p75 = np.percentile(array, [25, 50, 75])
    return {"count": int(array.size), "mean": float(array.mean()), "std": float(array.std()),
            "min": float(array.min()), "p25": float(p25), "median": float(median), "p75": float(p75),
            "max": float(array.max())}  # fmt: skip


def stage_totals(stats: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """The shards' stats summed, with ``tokens_per_s`` (tokens over the summed seconds of one process)."""
    totals: dict[str, float] = {}
    for shard in stats:
        for key, value in shard.items():
            totals[key] = totals.get(key, 0) + value
    if "tokens" in totals:
        totals["tokens_per_s"] = totals["tokens"] / max(totals.get("seconds", 0.0), 1e-9)
    return totals


def pair_statistics(pairs: list[dict[str, Any]], all_scores: list[float]) -> dict[str, Any]:
    """Score distributions (every response, chosen, rejected, margin) and chosen vs rejected lengths (tokens)."""
    chosen = [p["score_chosen"] for p in pairs]
    rejected = [p["score_rejected"] for p in pairs]
    chosen_len = np.asarray([p["chosen_tokens"] for p in pairs], dtype=np.float64)
    rejected_len = np.asarray([p["rejected_tokens"] for p in pairs], dtype=np.float64)
    return {
        "scores": {
            "all_responses": distribution(all_scores),
            "chosen": distribution(chosen),
            "rejected": distribution(rejected),
            "margin": distribution(c - r for c, r in zip(chosen, rejected, strict=True)),
        },
        "lengths": {
            "chosen_tokens": distribution(chosen_len),
            "rejected_tokens": distribution(rejected_len),
            "chosen_longer_fraction": float((chosen_len > rejected_len).mean()) if pairs else None,
            "mean_length_difference": float((chosen_len - rejected_len).mean()) if pairs else None,
        },
    }


def plot(pairs: list[dict[str, Any]], all_scores: list[float], path: Path) -> Path:
    """Three panels: score histograms (all, chosen, rejected), margins, chosen vs rejected lengths."""
    figure, (scores, margins, lengths) = plt.subplots(1, 3, figsize=(15, 4))
    finite = [s for s in all_scores if s is not None and np.isfinite(s)]
    for values, label in ((finite, "all responses"), ([p["score_chosen"] for p in pairs], "chosen"),
                          ([p["score_rejected"] for p in pairs], "rejected")):  # fmt: skip
        scores.hist(values, bins=40, alpha=0.5, label=label)
    scores.set(title="reward scores", xlabel="score", ylabel="responses")
    scores.legend()
    margins.hist([p["score_chosen"] - p["score_rejected"] for p in pairs], bins=40, color="tab:green")
    margins.set(title="margin (chosen - rejected)", xlabel="margin", ylabel="pairs")
    x = [p["rejected_tokens"] for p in pairs]
    y = [p["chosen_tokens"] for p in pairs]
    lengths.scatter(x, y, s=6, alpha=0.5)
    top = max([*x, *y, 1])
    lengths.plot([0, top], [0, top], color="black", linewidth=1)
    longer = f"{np.mean(np.asarray(y) > np.asarray(x)):.0%} chosen longer" if pairs else "no pairs"
    lengths.set(title=f"length in tokens; {longer}", xlabel="rejected", ylabel="chosen")
    figure.tight_layout()
    with atomic_file(path, "wb") as handle:
        figure.savefig(handle, dpi=100, format=path.suffix.lstrip(".") or "png")
    plt.close(figure)
    return path


def write_report(output_dir: Path, report: dict[str, Any], pairs: list[dict], all_scores: list[float]) -> Path:
    """Write ``report.json`` (``report`` plus the pair statistics) and ``report.png``; returns the JSON's path."""
    full = {**report, **pair_statistics(pairs, all_scores)}
    path = Path(output_dir) / "report.json"
    write_json_atomic(path, full)
    plot(pairs, all_scores, Path(output_dir) / "report.png")
    return path


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """A few console lines: prompts, pairs kept, drops by reason, tokens/s."""
    b = report["binarize"]
    dropped = ", ".join(f"{k} {v}" for k, v in b["dropped"].items() if v) or "none"
    lines = [f"prompts {report['prompts']['prompts']}, pairs kept {b['kept']} "
             f"(train_prefs {b['train_prefs']}, test_prefs {b['test_prefs']}), dropped: {dropped}"]  # fmt: skip
    for stage in ("generate", "score"):
        if report.get(stage, {}).get("tokens_per_s") is not None:
            lines.append(f"{stage}: {report[stage]['tokens']:.0f} tokens, {report[stage]['tokens_per_s']:,.0f} tok/s")
    generated, scored = report.get("generate", {}), report.get("score", {})
    cuts = {"prompts over the policy's context": generated.get("prompts_over_context", 0),
            "responses past the policy's context": generated.get("responses_past_context", 0),
            "conversations cut at reward_model.max_length": scored.get("truncated", 0),
            "of them with no response left": scored.get("response_lost", 0)}  # fmt: skip
    if any(cuts.values()):
        lines.append("truncation: " + ", ".join(f"{name} {count:.0f}" for name, count in cuts.items()))
    return lines
