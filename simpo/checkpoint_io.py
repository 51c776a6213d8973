"""Checkpoint files written atomically (a crash in the middle of a save never leaves a corrupt file) and read with
``simpo.io.read_torch_file`` (never running code from the file)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from simpo.io import read_torch_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to ``<path>.tmp`` in the same directory, fsync, then ``os.replace`` onto ``path``.

    ``os.replace`` is atomic on POSIX file systems, so ``last.ckpt`` is always either the previous
    complete checkpoint or the new complete one. Loading goes through ``read_torch_file``: plain data only, tensors
    on the CPU (Lightning moves them onto the model's and optimizer's devices).
    """

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> Any:
        return read_torch_file(path, "ckpt_path")

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
