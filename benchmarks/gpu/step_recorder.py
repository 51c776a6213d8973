"""A Lightning callback the GPU checks add to ``python train.py`` runs (``+callbacks.step_recorder=...``).

It writes one JSON line per optimizer step as soon as the step ends (so a run killed by its timeout still leaves
its numbers), and it can profile a window of steps with ``torch.profiler`` into a markdown table of the top
operators. It only reads what the run logs (``train/*`` from the throughput callback and the module) and times
the step itself; it changes nothing in the run.

    python train.py ... +callbacks.step_recorder._target_=benchmarks.gpu.step_recorder.StepRecorder \
        +callbacks.step_recorder.path=steps.jsonl +callbacks.step_recorder.profile_from=10 \
        +callbacks.step_recorder.profile_steps=2 +callbacks.step_recorder.profile_path=profile.md
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

KEYS = ("train/tokens_per_sec", "train/mfu", "train/mfu_palm", "train/peak_memory_mb", "train/loss", "train/grad_norm")


def _device_time(event: Any, self_only: bool) -> float:
    """Device (CUDA) time of a profiler event average in microseconds, across torch versions' attribute names."""
    names = (
        ("self_device_time_total", "self_cuda_time_total") if self_only else ("device_time_total", "cuda_time_total")
    )
    for name in names:
        value = getattr(event, name, None)
        if value is not None:
            return float(value)
    return 0.0


def profile_table(events: Any, wall_s: float, steps: int, row_limit: int = 25) -> str:
    """Markdown: the operators with the most self device time (CPU time where no device ran), per step."""
    averages = list(events)
    on_device = any(_device_time(e, True) > 0 for e in averages)
    key = (lambda e: _device_time(e, True)) if on_device else (lambda e: float(e.self_cpu_time_total))
    total = sum(key(e) for e in averages)
    where = "device" if on_device else "CPU"
    lines = [
        f"{steps} profiled step(s), {wall_s / steps * 1e3:.1f} ms wall per step; self {where} time of all operators: "
        f"{total / steps / 1e3:.1f} ms per step"
        + (f" (device busy about {min(total / 1e6 / wall_s, 1.0):.0%} of the wall time)" if on_device else ""),
        "",
        "| operator | calls/step | self device ms/step | self CPU ms/step | share |",
        "|---|---:|---:|---:|---:|",
    ]
    for e in sorted(averages, key=key, reverse=True)[:row_limit]:
        name = str(e.key).replace("|", "/")[:90]
        lines.append(
            f"| `{name}` | {e.count / steps:.0f} | {_device_time(e, True) / steps / 1e3:.2f} | "
            f"{e.self_cpu_time_total / steps / 1e3:.2f} | {key(e) / max(total, 1e-9):.1%} |"
        )
    return "\n".join(lines) + "\n"


class StepRecorder(L.Callback):
    """Append ``{"step", "time", "step_s", <train metrics>}`` to ``path`` after every optimizer step.

    Args:
        path: the JSON-lines file (created; appended to).
        profile_from: first optimizer step (0-based) to profile; ``None``: no profile.
        profile_steps: how many steps to profile.
        profile_path: where the markdown table of the profiled steps goes.
    """

    def __init__(
        self,
        path: str,
        profile_from: int | None = None,
        profile_steps: int = 2,
        profile_path: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.profile_from = profile_from
        self.profile_steps = profile_steps
        self.profile_path = Path(profile_path) if profile_path else self.path.with_suffix(".profile.md")
        self._created = time.time()
        self._step_start: float | None = None
        self._last_global_step = 0
        self._profiler: Any = None
        self._profile_start = 0.0
        self._write({"event": "created", "time": self._created})

    def _write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    @staticmethod
    def _sync(pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        params = sum(p.numel() for p in pl_module.parameters())  # DTensor.numel is the global size
        config = getattr(getattr(pl_module, "policy", None), "config", None)
        self._write(
            {
                "event": "train_start",
                "time": time.time(),
                "since_created_s": time.time() - self._created,
                "n_params": params,
                "device": str(pl_module.device),
                "device_name": torch.cuda.get_device_name(pl_module.device)
                if pl_module.device.type == "cuda"
                else None,
                "num_hidden_layers": getattr(config, "num_hidden_layers", None),
                "num_attention_heads": getattr(config, "num_attention_heads", None),
                "head_dim": getattr(config, "head_dim", None),
                "hidden_size": getattr(config, "hidden_size", None),
                "attn_implementation": getattr(config, "_attn_implementation", None),
                "precision": str(trainer.precision),
                "strategy": type(trainer.strategy).__name__,
            }
        )

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._step_start is None:
            self._sync(pl_module)
            self._step_start = time.perf_counter()
        step = trainer.global_step
        if self.profile_from is not None and step == self.profile_from and self._profiler is None:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if pl_module.device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            try:  # a profiler that cannot start (no CUPTI, say) must not cost the run its numbers
                self._profiler = torch.profiler.profile(activities=activities)
                self._profiler.__enter__()
            except Exception as error:
                self._profiler = None
                self.profile_from = None
                self._write({"event": "profile_error", "error": f"{type(error).__name__}: {error}"})
            self._profile_start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._step_start is None or trainer.global_step == self._last_global_step:
            return  # still accumulating gradients
        self._last_global_step = trainer.global_step
        step = trainer.global_step - 1  # the optimizer step that just ended
        self._sync(pl_module)
        step_s = time.perf_counter() - self._step_start
        self._step_start = None
        metrics = trainer.callback_metrics
        record: dict[str, Any] = {"event": "step", "step": step, "time": time.time(), "step_s": step_s}
        for key in KEYS:
            if key in metrics:
                record[key] = float(metrics[key])
        if pl_module.device.type == "cuda":
            record["max_memory_reserved_mb"] = torch.cuda.max_memory_reserved(pl_module.device) / 2**20
        self._write(record)
        if self._profiler is not None and step + 1 >= self.profile_from + self.profile_steps:
            wall = time.perf_counter() - self._profile_start
            profiler, self._profiler = self._profiler, None
            try:
                profiler.__exit__(None, None, None)
                self.profile_path.write_text(profile_table(profiler.key_averages(), wall, self.profile_steps))
                self._write({"event": "profile", "path": str(self.profile_path), "wall_s": wall})
            except Exception as error:
                self._write({"event": "profile_error", "error": f"{type(error).__name__}: {error}"})

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._profiler is not None:  # the run ended inside the profiled window
            self._profiler.__exit__(None, None, None)
            self._profiler = None
        self._write({"event": "train_end", "time": time.time(), "global_step": trainer.global_step})
