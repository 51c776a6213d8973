"""Save a resumable checkpoint when the job is told to stop (SIGTERM, or SIGUSR1 as SLURM sends before
preemption), then exit."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from simpo.global_batch import ends_accumulation_window

log = logging.getLogger(__name__)


class PreemptionCheckpoint(L.Callback):
    """On SIGTERM / SIGUSR1, finish the optimizer step in progress, write ``<dirpath>/last.ckpt`` and exit.

    The checkpoint is taken at an optimizer-step boundary (never in the middle of gradient accumulation)
    and records the data loader's position, so ``ckpt_path=last`` continues exactly where the run stopped.
    The process then leaves through Lightning's ``SIGTERMException`` before the next batch (exit status 0;
    the step's metrics are logged and flushed; the Hugging Face export is skipped). If that step was the
    last one, the run simply completes.

    Args:
        dirpath: the checkpoint directory (the same as ``ModelCheckpoint``'s).
        signals: names of the signals handled.
    """

    def __init__(self, dirpath: str, signals: tuple[str, ...] = ("SIGTERM", "SIGUSR1")) -> None:
        self.dirpath = Path(dirpath)
        self.signals = [getattr(signal, name) for name in signals]
        self.requested: signal.Signals | None = None
        self._saved = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = signal.Signals(signum)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Installed after Lightning's own SIGTERM notifier (registered after on_fit_start), which would
        # otherwise stop the run at the next batch, inside an accumulation window, without a checkpoint.
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous = {}

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object, batch: object, batch_idx: int
    ) -> None:
        if self.requested is None or self._saved:
            return
        if not ends_accumulation_window(batch_idx, trainer.accumulate_grad_batches, trainer.num_training_batches):
            return  # gradients half-accumulated: wait for the optimizer step
        path = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(path)
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint):  # no second, end-of-epoch "last" over this one
                callback._last_global_step_saved = trainer.global_step
        log.warning("received %s: saved %s at step %d; resume with ckpt_path=last",
                    self.requested.name, path, trainer.global_step)  # fmt: skip
        self._saved = True

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        # Exit here rather than right after saving, so the saved step's metrics are logged first.
        if self._saved:
            raise SIGTERMException()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._saved:
            raise SIGTERMException()
