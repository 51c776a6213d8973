"""``metrics.json`` and ``report.md`` of an evaluation run, and the table printed at the end."""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path
from typing import Any

from simpo.io import write_json, write_text

VERSIONED = ["torch", "transformers", "lightning", "datasets", "tokenizers"]


def versions() -> dict[str, str]:
    """Python and key package versions."""
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def write_metrics(run_dir: Path, metrics: dict[str, float], meta: dict[str, Any]) -> Path:
    """``metrics.json``: the flat metrics beside ``model``, ``data``, ``settings`` and ``versions``."""
    path = run_dir / "metrics.json"
    write_json(path, {**meta, "versions": versions(), "metrics": metrics}, default=str)
    return path


def markdown_table(metrics: dict[str, float]) -> str:
    """A two-column Markdown table of the metrics, grouped by task prefix in insertion order."""
    lines = ["| metric | value |", "|---|---:|"]
    lines += [f"| {name} | {value:.6g} |" for name, value in metrics.items()]
    return "\n".join(lines)


def write_report(run_dir: Path, title: str, metrics: dict[str, float], notes: list[str], images: list[Path]) -> Path:
    """``report.md``: a title, notes (model, data, files written), the metrics table and the plots."""
    parts = [f"# {title}", "", *[f"- {note}" for note in notes], "", markdown_table(metrics), ""]
    parts += [f"![{image.stem}]({image.name})" for image in images]
    path = run_dir / "report.md"
    write_text(path, "\n".join(parts) + "\n")
    return path
