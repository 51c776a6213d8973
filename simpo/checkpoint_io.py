"""Checkpoint files written atomically: a crash in the middle of a save never leaves a corrupt file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to ``<path>.tmp`` in the same directory, fsync, then ``os.replace`` onto ``path``.

    ``os.replace`` is atomic on POSIX file systems, so ``last.ckpt`` is always either the previous
    complete checkpoint or the new complete one.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            with tmp.open("rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
