"""Where a command runs: the one place that turns a device setting into ``cuda`` or ``cpu``."""

from __future__ import annotations

import torch

from simpo.core.value_checks import check_one_of
from simpo.errors import UserError

DEVICES = ("auto", "cpu", "cuda")  # evaluate.py's and sample.py's `device`
ACCELERATORS = ("auto", "cpu", "gpu", "cuda")  # the trainer.accelerator values that choose between CPU and CUDA


def resolve_device(device: str, key: str = "device", choices: tuple[str, ...] = DEVICES) -> str:
    """``cuda`` or ``cpu`` for ``device``, one of ``choices`` (``auto``: cuda when a GPU is visible; ``gpu`` is
    ``cuda``).

    Raises:
        UserError: naming ``key`` and the value as given: a value not in ``choices``, or a GPU where none is visible.
    """
    check_one_of(key, device, choices)
    gpu = device in ("cuda", "gpu")
    if gpu and not torch.cuda.is_available():
        raise UserError(f"{key}={device} but no CUDA GPU is visible here: use {key}=auto or {key}=cpu")
    return "cuda" if gpu or (device == "auto" and torch.cuda.is_available()) else "cpu"


def training_device(accelerator: str) -> str:
    """``cuda`` or ``cpu``: where Lightning's ``trainer.accelerator`` (``auto`` | ``cpu`` | ``gpu`` | ``cuda``) trains.

    Raises:
        UserError: naming ``trainer.accelerator``: ``gpu``/``cuda`` where no GPU is visible.
    """
    if accelerator not in ACCELERATORS:  # Lightning checks its other accelerators itself
        return "cpu"
    return resolve_device(accelerator, "trainer.accelerator", ACCELERATORS)
