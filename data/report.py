"""The data report: what setup read, kept and dropped (and why), BOS repairs, lengths and truncation, per split.

``split_report`` summarises the per-row columns that ``PairEncoder`` writes and the malformed lines of a JSON-lines
file; ``check_rows_left`` stops a split with no usable row and ``check_drop_fraction`` enforces
``data.max_drop_fraction``; ``format_table`` is the short table setup prints; ``write_report`` writes
``data_report.json`` atomically.

Example rows of a drop reason are row indices as read (0-based, counting the rows read; a carved validation set
keeps the indices of the split it was carved from); ``malformed_json`` lines are not rows, so that reason lists
1-based line numbers under ``lines`` instead of ``examples``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from simpo.errors import UserError
from simpo.io import write_json

EXAMPLES_PER_REASON = 5
PERCENTILES = (50, 90, 99)
STATS = ("drop_reason", "bos_extra", "prompt_tokens", "chosen_tokens", "rejected_tokens", "prompt_truncated",
         "response_truncated", "special_in_text")  # fmt: skip


def length_stats(values: list[int]) -> dict[str, float]:
    """Percentiles, mean and max of token counts (zeros when there are none)."""
    if not values:
        return {**{f"p{p}": 0 for p in PERCENTILES}, "mean": 0.0, "max": 0}
    array = np.asarray(values)
    stats: dict[str, float] = {f"p{p}": int(np.percentile(array, p, method="nearest")) for p in PERCENTILES}
    return {**stats, "mean": round(float(array.mean()), 1), "max": int(array.max())}


def split_report(
    columns: dict[str, list[Any]],
    source_rows: list[int] | None,
    *,
    split: str,
    layout: str,
    bos_policy: str,
    line_drops: dict[str, list[int | str]] | None = None,
    special_text: str = "refuse",
) -> dict[str, Any]:
    """Summary of one tokenised split.

    Args:
        columns: the ``STATS`` columns of the ``PairEncoder`` output, one value per row read (dropped ones
            included).
        source_rows: for each encoded row, its index in the split as read (``None``: the same index); a
            validation set carved out of train keeps the indices of the train split.
        split: the split's name as read (e.g. ``train_prefs``).
        layout: the detected layout.
        bos_policy: ``error`` or ``fix``.
        line_drops: {reason: 1-based line numbers} of the lines of the split's file dropped before encoding
            (``malformed_json``: not JSON objects; ``mixed_field_type``: a field of another JSON type than most rows
            give it; ``"<file>:<line>"`` for a split read from several files); they count as read and dropped.
        special_text: ``data.special_text`` (``refuse``, ``escape`` or ``allow``).

    Returns:
        ``read``, ``kept``, ``dropped`` (``{reason: {count, examples}}``, examples being row indices as read;
        ``{count, lines}`` for ``malformed_json``), ``drop_fraction``, ``bos_repairs`` (rows and tokens),
        ``truncated`` (prompts, responses), ``tokens`` (prompt / chosen / rejected token percentiles of the kept
        rows, before truncation), ``layout``, ``special_text`` (the policy, the kept rows whose message contents hold
        special-token strings, examples, and how many rows hold each string).
    """
    reasons = columns["drop_reason"]
    source = source_rows if source_rows is not None else range(len(reasons))
    counts = Counter(reason for reason in reasons if reason)
    lines = {reason: numbers for reason, numbers in (line_drops or {}).items() if numbers}
    counts.update({reason: len(numbers) for reason, numbers in lines.items()})
    dropped = {
        reason: (
            {"count": count, "lines": list(lines[reason][:EXAMPLES_PER_REASON])}
            if reason in lines
            else {
                "count": count,
                "examples": [source[i] for i, r in enumerate(reasons) if r == reason][:EXAMPLES_PER_REASON],
            }
        )
        for reason, count in counts.most_common()
    }
    read = len(reasons) + sum(len(numbers) for numbers in lines.values())
    kept = [i for i, reason in enumerate(reasons) if not reason]
    bos_rows = [i for i in kept if columns["bos_extra"][i]]
    special_rows = [i for i in kept if columns["special_in_text"][i]]
    return {
        "split": split,
        "layout": layout,
        "read": read,
        "kept": len(kept),
        "dropped": dropped,
        "drop_fraction": round(sum(counts.values()) / max(read, 1), 6),
        "bos_policy": bos_policy,
        "bos_repairs": {
            "rows": len(bos_rows) if bos_policy == "fix" else 0,
            "tokens": sum(columns["bos_extra"][i] for i in bos_rows) if bos_policy == "fix" else 0,
            "examples": [source[i] for i in bos_rows][:EXAMPLES_PER_REASON] if bos_policy == "fix" else [],
        },
        "special_text": {
            "policy": special_text,
            "rows": len(special_rows),
            "examples": [source[i] for i in special_rows][:EXAMPLES_PER_REASON],
            "strings": dict(Counter(s for i in special_rows for s in columns["special_in_text"][i].split(" "))),
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


def where_dropped(entry: dict[str, Any]) -> str:
    """``rows [...]`` (row indices) or ``lines [...]`` (``malformed_json``, ``mixed_field_type``) of one entry."""
    return f"lines {entry['lines']}" if "lines" in entry else f"rows {entry['examples']}"


def top_reasons(report: dict[str, Any], count: int = 5) -> str:
    """The ``count`` most frequent drop reasons of a split report, with their example rows or lines."""
    return "; ".join(
        f"{reason}: {entry['count']} ({where_dropped(entry)})"
        for reason, entry in list(report["dropped"].items())[:count]
    )


def check_rows_left(report: dict[str, Any], dataset: str) -> None:
    """Fail when a split kept no row at all (whatever ``data.max_drop_fraction`` allows).

    Raises:
        ValueError: naming the split, ``data.dataset`` and the counts per reason.
    """
    if report["kept"] == 0:
        raise UserError(
            f"no usable rows remain in split {report['split']!r} of data.dataset={dataset}: {top_reasons(report)} "
            f"(all {report['read']} rows read were dropped). Fix the data, or data.columns (missing_field) / "
            "data.max_length (empty_response_after_truncation)"
        )


def check_special_text(report: dict[str, Any], split: str, dataset: str) -> None:
    """Stop (``data.special_text=refuse``) when kept rows hold special-token strings in their message contents.

    Raises:
        UserError: naming the rows (indices as read), the strings and ``data.special_text``.
    """
    found = report["special_text"]
    if not found["rows"]:
        return
    strings = ", ".join(sorted(found["strings"]))
    raise UserError(
        f"{found['rows']} row(s) of {dataset} ({split}; rows {found['examples']}) hold special-token strings in their "
        f"message text ({strings}): tokenised as they are, they would become control tokens (a fake end of turn or a "
        "new turn). Set data.special_text=escape to tokenise them as plain text, or data.special_text=allow to keep "
        "them as control tokens"
    )


def check_drop_fraction(report: dict[str, Any], max_drop_fraction: float, dataset: str) -> None:
    """Fail when a split dropped more than ``max_drop_fraction`` of its rows.

    Raises:
        ValueError: listing the top reasons with example row indices and the settings involved.
    """
    if report["read"] and report["drop_fraction"] > max_drop_fraction:
        raise UserError(
            f"split {report['split']!r} of data.dataset={dataset}: dropped {report['read'] - report['kept']} of "
            f"{report['read']} rows "
            f"({report['drop_fraction']:.2%}), more than data.max_drop_fraction={max_drop_fraction}. "
            f"Top reasons: {top_reasons(report)}. Fix the data (or data.columns / data.max_length for "
            "empty_response_after_truncation), or raise data.max_drop_fraction to accept the loss"
        )


def format_table(report: dict[str, Any]) -> str:
    """A short fixed-width table of the splits in ``report``."""
    header = ["split", "role", "layout", "read", "kept", "dropped", "bos fixed", "trunc. prompts", "prompt p50/p99",
              "response p50/p99", "cache"]  # fmt: skip
    rows = [header]
    for role, entry in sorted(report["splits"].items(), key=lambda item: item[0] != "train"):  # train first
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
        f"  {role}: {reason}={entry['count']} ({where_dropped(entry)})"
        for role, split in report["splits"].items()
        for reason, entry in split["dropped"].items()
    ]
    return "\n".join(lines + (["dropped rows by reason:", *reasons] if reasons else []))


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write ``report`` as JSON to ``path`` atomically."""
    write_json(path, report)
