"""Log the first and the last optimizer step whatever ``trainer.log_every_n_steps`` says."""

from __future__ import annotations

import lightning as L

from simpo.core.global_batch import ends_accumulation_window


class EdgeStepLogging(L.Callback):
    """Make Lightning send the ``train/*`` metrics of the first and of the last optimizer step to the loggers.

    Lightning logs every ``log_every_n_steps``-th step only, so a short run (or the end of a long one) left no row
    in ``metrics.csv``. For the batch that completes the first or the last optimizer step, this sets
    ``trainer.log_every_n_steps`` to 1 until the metrics are written, then restores it.
    """

    def __init__(self) -> None:
        self._every: int | None = None

    def _is_last_step(self, trainer: L.Trainer, batch_idx: int) -> bool:
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            return True
        last_epoch = (
            trainer.max_epochs is not None
            and trainer.max_epochs > 0
            and (trainer.current_epoch + 1 >= trainer.max_epochs)
        )
        return last_epoch and batch_idx + 1 >= trainer.num_training_batches

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object, batch: object, batch_idx: int
    ) -> None:
        if not ends_accumulation_window(batch_idx, trainer.accumulate_grad_batches, trainer.num_training_batches):
            return
        if trainer.global_step == 1 or self._is_last_step(trainer, batch_idx):
            self._every = self._every or trainer.log_every_n_steps
            trainer.log_every_n_steps = 1  # read by Lightning right after this hook

    def _restore(self, trainer: L.Trainer) -> None:
        if self._every is not None:
            trainer.log_every_n_steps, self._every = self._every, None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        self._restore(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore(trainer)
