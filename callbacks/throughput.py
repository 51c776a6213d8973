"""Training throughput: tokens per second, peak memory and (on GPU) model FLOPs utilisation."""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

import lightning as L
import torch

# Dense bf16 peak FLOP/s per GPU (no sparsity), matched against ``torch.cuda.get_device_name()``; first match
# wins, so the more specific names come first.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A10G", 70e12),
    ("L40S", 362e12),
    ("L4", 121e12),
)


def peak_flops(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s of a GPU by name, ``None`` when the card is not in the table."""
    for key, flops in PEAK_BF16_FLOPS:
        if key in device_name:
            return flops
    return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


class ThroughputMonitor(L.Callback):
    """Log, once per optimizer step (after gradient accumulation):

    - ``train/tokens_per_sec``: non-padding tokens (``attention_mask`` ones of the (2B, T) batches) this process
      trained on during the step, over the step's wall time (from the first micro-batch's start to the end of
      the last one, including the optimizer step).
    - ``train/peak_memory_mb``: on GPU ``torch.cuda.max_memory_allocated``; on CPU the process's peak RSS.
    - ``train/mfu`` (GPU only, when the card's peak is known): ``6 x parameters x tokens/sec / peak bf16 FLOP/s``
      (the standard dense-transformer estimate, attention FLOPs left out).

    Args:
        peak_flops_per_sec: override the device's peak FLOP/s for the MFU (``None``: look the card up).
    """

    def __init__(self, peak_flops_per_sec: float | None = None) -> None:
        self.peak_flops_per_sec = peak_flops_per_sec
        self._start: float | None = None
        self._tokens = 0
        self._step_at_start = 0
        self._n_params = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._n_params = sum(p.numel() for p in pl_module.parameters())
        self._start = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._start is None:  # the first micro-batch of an optimizer step
            self._sync(pl_module)
            self._start, self._tokens, self._step_at_start = time.perf_counter(), 0, trainer.global_step
        self._tokens = self._tokens + batch["num_tokens"]  # the pairs' tokens, whatever the layout computes

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._start is None or trainer.global_step == self._step_at_start:
            return  # still accumulating gradients
        self._sync(pl_module)
        tokens_per_sec = int(self._tokens) / max(time.perf_counter() - self._start, 1e-9)
        self._start = None
        metrics = {"train/tokens_per_sec": tokens_per_sec}
        device = pl_module.device
        if device.type == "cuda":
            metrics["train/peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            peak = self.peak_flops_per_sec or peak_flops(torch.cuda.get_device_name(device))
            if peak:
                metrics["train/mfu"] = 6 * self._n_params * tokens_per_sec / peak
        else:
            metrics["train/peak_memory_mb"] = peak_rss_mb()
        pl_module.log_dict(metrics, on_step=True, on_epoch=False)

    @staticmethod
    def _sync(pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
