"""Lightning's checkpoint files through ``simpo.io``: written atomically (a crash in the middle of a save leaves the
previous complete checkpoint) and read with ``read_torch_file`` (never running code from the file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from simpo.io import read_torch_file, save_torch


class AtomicCheckpointIO(TorchCheckpointIO):
    """``save_torch`` (a temporary beside the target, synced, renamed onto it) and ``read_torch_file`` (plain data
    only, tensors on the CPU: Lightning moves them onto the model's and optimizer's devices)."""

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> Any:
        return read_torch_file(path, "ckpt_path")

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        save_torch(checkpoint, path)
