"""Where a command runs: the one place that turns a device setting into ``cuda`` or ``cpu``."""

from __future__ import annotations

import torch

from simpo.core.value_checks import check_one_of
from simpo.errors import UserError

DEVICES = ("auto", "cpu", "cuda")  # evaluate.py's and sample.py's `device`


def resolve_device(device: str, key: str = "device") -> str:
    """``cuda`` or ``cpu`` for ``device`` (``auto``: cuda when a GPU is visible).

    Raises:
        UserError: naming ``key``: a value not in ``DEVICES``, or ``cuda`` where no GPU is visible.
    """
    check_one_of(key, device, DEVICES)
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{key}=cuda but no CUDA GPU is visible here: use {key}=auto or {key}=cpu")
    return "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"


def training_device(accelerator: str) -> str:
    """``cuda`` or ``cpu``: where Lightning's ``trainer.accelerator`` (``auto`` | ``cpu`` | ``gpu`` | ``cuda``) trains.

    Raises:
        UserError: naming ``trainer.accelerator``: ``gpu``/``cuda`` where no GPU is visible.
    """
    if accelerator not in ("auto", "cpu", "gpu", "cuda"):  # Lightning checks its other accelerators itself
        return "cpu"
    return resolve_device("cuda" if accelerator == "gpu" else accelerator, key="trainer.accelerator")
