"""``status.json``: the outcome of one run, read back by sweep summaries."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only


def write_status(run_dir: Path, status: str, metrics: dict[str, float] | None = None, error: str | None = None) -> Path:
    """Write ``<run_dir>/status.json``: status (completed | failed), final metrics, error, command-line overrides.

    Only the global rank 0 process writes (every process of a multi-process run calls it).
    """
    overrides: list[str] = []
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # not under a Hydra run (composed config in tests)
        overrides = sys.argv[1:]
    record: dict[str, Any] = {
        "status": status,
        "run_dir": str(run_dir),
        "overrides": overrides,
        "metrics": metrics or {},
        "error": error,
    }
    path = run_dir / "status.json"
    if rank_zero_only.rank != 0:
        return path
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, path)
    return path


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``status.json``, or ``None`` when it has none (never finished nor failed cleanly)."""
    path = run_dir / "status.json"
    return json.loads(path.read_text()) if path.is_file() else None
