"""``status.json``: the outcome of a run directory's latest attempt and the history of every attempt.

Statuses: ``running`` (started, not ended: a ``running`` status that no process owns means the run was killed
without warning), ``completed``, ``failed`` (an error, including a non-finite loss or a run that trained
nothing), ``interrupted`` (SIGINT/SIGTERM/SIGUSR1: a checkpoint was saved where possible).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only

from simpo.errors import UserError
from simpo.io import write_json

STATUSES = ("running", "completed", "failed", "interrupted")


class RunFailedError(UserError, RuntimeError):
    """A run that must not be reported as completed; the message says why and what to change (a ``RuntimeError``
    too, for callers that catch one)."""


class NoTrainingError(RunFailedError):
    """The fit ended without a single optimizer step; the message names the limits to check."""


def _overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except ValueError:  # not under a Hydra run (composed config in tests)
        return sys.argv[1:]


def write_status(
    run_dir: Path,
    status: str,
    metrics: dict[str, float] | None = None,
    error: str | None = None,
    **details: Any,
) -> Path:
    """Write ``<run_dir>/status.json`` atomically: this attempt's status, metrics, error and details.

    The record keeps the history of earlier attempts in this directory (``attempts``: one entry per command that
    started or resumed the run, oldest first), so a resumed or failed attempt never erases what an earlier one
    achieved. Only the global rank 0 process writes (every process of a multi-process run calls it).

    Args:
        run_dir: the run directory.
        status: one of ``STATUSES``.
        metrics: final metrics of this attempt (floats).
        error: ``"Type: message"`` of a failure or interruption.
        details: JSON-serialisable extras of this attempt (``step``, ``checkpoint``, ``resumed_from``, ``changed``).
    """
    if status not in STATUSES:
        raise ValueError(f"unknown run status {status!r}")
    path = run_dir / "status.json"
    if rank_zero_only.rank != 0:
        return path
    previous = read_status(run_dir) or {}
    attempts: list[dict[str, Any]] = list(previous.get("attempts", []))
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    finite = {k: v if math.isfinite(v) else str(v) for k, v in (metrics or {}).items()}  # JSON has no NaN/inf
    attempt = {"status": status, "overrides": _overrides(), "metrics": finite, "error": error, **details}
    if status == "running" or not attempts or attempts[-1].get("status") != "running":
        attempts.append({"started": now, **attempt})
    else:  # this attempt's end
        attempts[-1] = {**attempts[-1], **attempt, "ended": now}
    record: dict[str, Any] = {"run_dir": str(run_dir), **attempts[-1], "attempts": attempts}
    write_json(path, record, default=str)
    return path


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``status.json``, or ``None`` when it has none (never started)."""
    path = run_dir / "status.json"
    return json.loads(path.read_text()) if path.is_file() else None
