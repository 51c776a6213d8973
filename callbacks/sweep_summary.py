"""Hydra callback: at the end of a sweep, tabulate every run into ``summary.csv`` and ``summary.md``."""

from __future__ import annotations

import csv
import logging
import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from simpo.io import atomic_file, write_text
from simpo.runs.run_status import read_status

log = logging.getLogger(__name__)

METRICS = ["val/rewards/accuracies", "val/rewards/margins", "val/loss", "train/rewards/accuracies", "train/loss"]


NOT_RUN = "not run"


def _last_start(status: dict[str, Any]) -> float | None:
    """When the newest attempt recorded in a ``status.json`` started (seconds since the epoch), if recorded."""
    attempts = status.get("attempts") or [status]
    started = attempts[-1].get("started")
    try:
        return datetime.fromisoformat(started).timestamp() if started else None
    except ValueError:
        return None


def collect_runs(sweep_dir: Path, metric: str, direction: str, since: float | None = None) -> list[dict[str, Any]]:
    """One row per run directory of ``sweep_dir`` (those holding ``.hydra/``), best first.

    A row holds ``run`` (its number), ``status`` (completed | failed | incomplete: never wrote ``status.json`` |
    not run: with ``since``, a directory whose newest attempt started before this sweep, i.e. an earlier sweep's run
    this one was refused to replace), ``overrides``, the optimized ``metric`` and ``METRICS`` (never an earlier
    sweep's), ``error`` and ``run_dir``. Completed runs come first, ordered by ``metric`` (``direction`` maximize |
    minimize).
    """
    rows = []
    for run_dir in sorted((p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()), key=_run_number):
        status = read_status(run_dir) or {"status": "incomplete", "metrics": {}, "error": None}
        started = _last_start(status)
        if since is not None and started is not None and started < int(since):
            status = {"status": NOT_RUN, "metrics": {},
                      "error": f"not run by this sweep: the directory holds an earlier run ({status['status']}), "
                               "which was not replaced (the sweep's log says why)"}  # fmt: skip
        overrides_file = run_dir / ".hydra" / "overrides.yaml"
        overrides = OmegaConf.to_container(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
        metrics = status.get("metrics", {})
        row = {"run": run_dir.name, "status": status["status"], "overrides": " ".join(overrides)}  # type: ignore[arg-type]
        for key in dict.fromkeys([metric, *METRICS]):
            row[key] = metrics.get(key)
        row.update(error=status.get("error") or "", run_dir=str(run_dir))
        rows.append(row)
    sign = -1.0 if direction == "maximize" else 1.0

    def order(row: dict[str, Any]) -> tuple[int, float]:
        value = row[metric]
        usable = row["status"] == "completed" and value is not None and not math.isnan(value)
        return (0, sign * value) if usable else (1, 0.0)

    return sorted(rows, key=order)


def _run_number(path: Path) -> tuple[int, str]:
    return (int(path.name), "") if path.name.isdigit() else (1 << 30, path.name)


def write_summary(rows: list[dict[str, Any]], sweep_dir: Path) -> None:
    """``summary.csv`` (every field) and ``summary.md`` (a readable table) in ``sweep_dir``."""
    if not rows:
        return
    fields = list(rows[0])
    with atomic_file(sweep_dir / "summary.csv", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    shown = [f for f in fields if f != "error"]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for row in rows:
        cells = [
            f"{row[f]:.4g}" if isinstance(row[f], float) else str(row[f] if row[f] is not None else "") for f in shown
        ]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [row for row in rows if row["error"]]
    if failed:
        lines += ["", "Failed runs:", *(f"- run {row['run']}: {' '.join(row['error'].split())}" for row in failed)]
    write_text(sweep_dir / "summary.md", "\n".join(lines) + "\n")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


class SweepSummary(Callback):
    """Writes ``<sweep dir>/summary.csv`` and ``summary.md`` when a ``-m`` sweep ends (best run first), and ends the
    process with status 1 when no run of the sweep completed."""

    def __init__(self) -> None:
        self.started: float | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = collect_runs(sweep_dir, config.optimized_metric, config.optimized_metric_direction, self.started)
        write_summary(rows, sweep_dir)
        done = sum(row["status"] == "completed" for row in rows)
        log.info("sweep summary: %d of %d runs completed; %s", done, len(rows), sweep_dir / "summary.md")
        if rows and done == 0:
            log.error("no run of the sweep completed (%s): see %s", ", ".join(sorted({r["status"] for r in rows})),
                      sweep_dir / "summary.md")  # fmt: skip
            raise SystemExit(1)
