"""The data report: what setup read, kept and dropped (and why), BOS repairs, lengths and truncation, per split.

``split_report`` summarises the per-row columns that ``PairEncoder`` writes; ``check_drop_fraction`` enforces
``data.max_drop_fraction``; ``format_table`` is the short table setup prints; ``write_report`` writes
``data_report.json`` atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import datasets
import numpy as np

EXAMPLES_PER_REASON = 5
PERCENTILES = (50, 90, 99)


def length_stats(values: list[int]) -> dict[str, float]:
    """Percentiles, mean and max of token counts (zeros when there are none)."""
    if not values:
        return {**{f"p{p}": 0 for p in PERCENTILES}, "mean": 0.0, "max": 0}
    array = np.asarray(values)
    stats: dict[str, float] = {f"p{p}": int(np.percentile(array, p, method="nearest")) for p in PERCENTILES}
    return {**stats, "mean": round(float(array.mean()), 1), "max": int(array.max())}


def split_report(
    encoded: datasets.Dataset, source_rows: list[int] | None, *, split: str, layout: str, bos_policy: str
) -> dict[str, Any]:
    """Summary of one tokenised split.

    Args:
        encoded: ``PairEncoder`` output, one row per row read (dropped ones included).
        source_rows: for each encoded row, its index in the split as read (``None``: the same index); a
            validation set carved out of train keeps the indices of the train split.
        split: the split's name as read (e.g. ``train_prefs``).
        layout: the detected layout.
        bos_policy: ``error`` or ``fix``.

    Returns:
        ``read``, ``kept``, ``dropped`` (``{reason: {count, examples}}``, examples being row indices as read),
        ``drop_fraction``, ``bos_repairs`` (rows and tokens), ``truncated`` (prompts, responses), ``tokens``
        (prompt / chosen / rejected token percentiles of the kept rows, before truncation), ``layout``.
    """
    columns = encoded.select_columns(
        ["drop_reason", "bos_extra", "prompt_tokens", "chosen_tokens", "rejected_tokens", "prompt_truncated",
         "response_truncated"]
    ).to_dict()  # fmt: skip
    reasons = columns["drop_reason"]
    source = source_rows if source_rows is not None else range(len(reasons))
    counts = Counter(reason for reason in reasons if reason)
    dropped = {
        reason: {
            "count": count,
            "examples": [source[i] for i, r in enumerate(reasons) if r == reason][:EXAMPLES_PER_REASON],
        }
        for reason, count in counts.most_common()
    }
    kept = [i for i, reason in enumerate(reasons) if not reason]
    bos_rows = [i for i in kept if columns["bos_extra"][i]]
    return {
        "split": split,
        "layout": layout,
        "read": len(reasons),
        "kept": len(kept),
        "dropped": dropped,
        "drop_fraction": round(sum(counts.values()) / max(len(reasons), 1), 6),
        "bos_policy": bos_policy,
        "bos_repairs": {
            "rows": len(bos_rows) if bos_policy == "fix" else 0,
            "tokens": sum(columns["bos_extra"][i] for i in bos_rows) if bos_policy == "fix" else 0,
            "examples": [source[i] for i in bos_rows][:EXAMPLES_PER_REASON] if bos_policy == "fix" else [],
        },
        "truncated": {
            "prompts": sum(columns["prompt_truncated"][i] for i in kept),
            "responses": sum(columns["response_truncated"][i] for i in kept),
        },
        "tokens": {
            name: length_stats([columns[f"{name}_tokens"][i] for i in kept])
            for name in ("prompt", "chosen", "rejected")
        },
    }


def check_drop_fraction(report: dict[str, Any], max_drop_fraction: float) -> None:
    """Fail when a split dropped more than ``max_drop_fraction`` of its rows.

    Raises:
        ValueError: listing the top reasons with example row indices and the settings involved.
    """
    if report["read"] and report["drop_fraction"] > max_drop_fraction:
        reasons = "; ".join(
            f"{reason}: {entry['count']} (rows {entry['examples']})"
            for reason, entry in list(report["dropped"].items())[:5]
        )
        raise ValueError(
            f"split {report['split']!r}: dropped {report['read'] - report['kept']} of {report['read']} rows "
            f"({report['drop_fraction']:.2%}), more than data.max_drop_fraction={max_drop_fraction}. "
            f"Top reasons: {reasons}. Fix the data (or data.columns / data.max_length for "
            "empty_response_after_truncation), or raise data.max_drop_fraction to accept the loss"
        )


def format_table(report: dict[str, Any]) -> str:
    """A short fixed-width table of the splits in ``report``."""
    header = ["split", "role", "layout", "read", "kept", "dropped", "bos fixed", "trunc. prompts", "prompt p50/p99",
              "response p50/p99", "cache"]  # fmt: skip
    rows = [header]
    for role, entry in report["splits"].items():
        tokens = entry["tokens"]
        response_p50 = max(tokens["chosen"]["p50"], tokens["rejected"]["p50"])
        response_p99 = max(tokens["chosen"]["p99"], tokens["rejected"]["p99"])
        rows.append([
            entry["split"], role, entry["layout"], str(entry["read"]), str(entry["kept"]),
            str(entry["read"] - entry["kept"]), str(entry["bos_repairs"]["rows"]), str(entry["truncated"]["prompts"]),
            f"{tokens['prompt']['p50']}/{tokens['prompt']['p99']}", f"{response_p50}/{response_p99}",
            "hit" if entry.get("cache", {}).get("hit") else "built",
        ])  # fmt: skip
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    reasons = [
        f"  {role}: {reason}={entry['count']} (rows {entry['examples']})"
        for role, split in report["splits"].items()
        for reason, entry in split["dropped"].items()
    ]
    return "\n".join(lines + (["dropped rows by reason:", *reasons] if reasons else []))


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write ``report`` as JSON to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(report, handle, indent=2)
    os.replace(tmp, path)
