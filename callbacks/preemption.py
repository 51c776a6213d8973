"""Save a resumable checkpoint when the job is told to stop (Ctrl-C / SIGINT, SIGTERM, or SIGUSR1 as SLURM sends
before preemption), then exit with ``128 + the signal number``."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from simpo.core.global_batch import ends_accumulation_window

log = logging.getLogger(__name__)


class RunInterrupted(SIGTERMException):
    """The run stopped on a signal after saving ``checkpoint`` at ``step`` (``None``: nothing could be saved).

    A ``SystemExit`` whose code is ``128 + signum`` (130 for SIGINT, 143 for SIGTERM, 138 for SIGUSR1), so that an
    uncaught one ends the process with that status; ``train.py`` records it as ``interrupted`` first.
    """

    def __init__(self, signum: signal.Signals, step: int, checkpoint: str | None, run_dir: Path | None) -> None:
        super().__init__(128 + int(signum))
        self.signal, self.step, self.checkpoint = signum, step, checkpoint
        where = f"hydra.run.dir={run_dir} " if run_dir is not None else ""
        self.message = f"{signum.name}: stopped at step {step}" + (
            f", saved {checkpoint}; resume with {where}ckpt_path=last" if checkpoint else ""
        )

    def __str__(self) -> str:
        return self.message


class PreemptionCheckpoint(L.Callback):
    """On SIGINT / SIGTERM / SIGUSR1, finish the optimizer step in progress, write ``<dirpath>/last.ckpt`` and exit.

    The checkpoint is taken at an optimizer-step boundary (never in the middle of gradient accumulation) and records
    the data loader's position, so ``ckpt_path=last`` continues exactly where the run stopped. All processes of a
    multi-process run agree on the step (any process that received the signal decides). The step's metrics are
    logged and flushed, the Hugging Face export is skipped, and the process leaves with ``RunInterrupted``
    (exit status 128 + signal number). A second Ctrl-C (SIGINT) or SIGTERM while waiting for the step boundary
    acts at once, with the default behaviour of that signal. If the step was the last one, the run simply completes.

    Args:
        dirpath: the checkpoint directory; ``None`` (the default): the ``ModelCheckpoint``'s, else
            ``<run_dir>/checkpoints``, so that ``ckpt_path=last`` finds it.
        signals: names of the signals handled.
    """

    def __init__(self, dirpath: str | None = None, signals: tuple[str, ...] = ("SIGINT", "SIGTERM", "SIGUSR1")) -> None:
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.run_dir: Path | None = None
        self.signals = [getattr(signal, name) for name in signals]
        self.requested: signal.Signals | None = None
        self.saved: str | None = None
        self._stop_step: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is None:
            self.requested = signal.Signals(signum)
            log.warning("received %s: checkpointing at the end of this optimizer step (send it again to stop now)",
                        self.requested.name)  # fmt: skip
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.run_dir = Path(trainer.default_root_dir)
        if self.dirpath is None:
            saver = next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)
            self.dirpath = Path(saver.dirpath) if saver is not None and saver.dirpath else self.run_dir / "checkpoints"
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
        if self._stop_step is not None:
            return
        if not ends_accumulation_window(batch_idx, trainer.accumulate_grad_batches, trainer.num_training_batches):
            return  # gradients half-accumulated: wait for the optimizer step
        asked = self.requested is not None
        if trainer.world_size > 1:  # every process must stop at the same step
            asked = trainer.strategy.reduce_boolean_decision(asked, all=False)
        if not asked:
            return
        if self.requested is None:  # another process received it
            self.requested = signal.SIGTERM
        path = Path(self.dirpath) / "last.ckpt"
        trainer.save_checkpoint(path)
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint):  # no second, end-of-epoch "last" over this one
                callback._last_global_step_saved = trainer.global_step
        self.saved, self._stop_step = str(path), trainer.global_step
        log.warning("%s: saved %s at step %d; resume with hydra.run.dir=%s ckpt_path=last", self.requested.name,
                    path, trainer.global_step, self.run_dir)  # fmt: skip

    def _exit(self) -> None:
        if self._stop_step is not None and self.requested is not None:
            raise RunInterrupted(self.requested, self._stop_step, self.saved, self.run_dir)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        # Exit here rather than right after saving, so the saved step's metrics are logged first.
        self._exit()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._exit()
