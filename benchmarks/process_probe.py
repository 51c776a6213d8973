"""A Lightning callback that records, for ``benchmarks/whole_process_vs_trl.py``, what ``/usr/bin/time`` cannot see.

Added to ``python train.py`` from the command line (train.py runs from the repository root, so the ``benchmarks``
namespace package is importable)::

    python train.py ... +callbacks.probe._target_=benchmarks.process_probe.ProcessProbe +callbacks.probe.path=probe.json

Writes ``path`` (JSON) at the end of training:

- ``floor_rss_mib``: resident memory (``VmRSS``) at ``on_train_start``, i.e. before the first step (Python, torch,
  Lightning, tokenizer, data, model; the AdamW state is created lazily in the first step);
- ``t_train_start`` / ``t_first_step_end`` / ``t_last_step_end`` (``time.time()``): the training part is from just
  before the first step to the end of the last optimizer step (checkpointing and export come after);
- ``steps``, ``tokens``: optimizer steps and the pairs' chosen + rejected sequence tokens (``batch["num_tokens"]``,
  the same whatever ``data.layout``; ``attention_mask`` ones when a batch has no ``num_tokens``);
- ``torch_threads``.

Its per-step cost is reading two numbers; it imports nothing beyond what train.py already has.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch


def vm_rss_mib() -> float:
    """Current resident set size of this process in MiB (``/proc/self/status``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class ProcessProbe(L.Callback):
    """Record the RSS floor, the training part's start and end and the tokens trained (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.record: dict[str, Any] = {"steps": 0, "tokens": 0}
        self._tokens: list[Any] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record.update(floor_rss_mib=vm_rss_mib(), t_train_start=time.time(), torch_threads=torch.get_num_threads())

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        tokens = batch.get("num_tokens") if isinstance(batch, dict) else None
        self._tokens.append(tokens if tokens is not None else batch["attention_mask"].sum())

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.record["t_last_step_end"] = time.time()
        self.record.setdefault("t_first_step_end", self.record["t_last_step_end"])

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record.update(steps=trainer.global_step, tokens=int(sum(int(t) for t in self._tokens)),
                           t_train_end=time.time())  # fmt: skip
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.record, indent=1))
