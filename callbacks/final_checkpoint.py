"""The last optimizer step is checkpointed before anything else happens at the end of training (the Hugging Face
export above all), so that an export that fails (an unwritable directory, a full disk) loses no training."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class FinalCheckpoint(L.Callback):
    """At the end of training, have every ``ModelCheckpoint`` with ``save_last`` write ``last.ckpt`` of the final
    step if its newest save is of an earlier one (a run that stops at ``trainer.max_steps`` between its
    ``every_n_train_steps`` saves, or before an epoch's end). ``train.py`` puts it first among the callbacks, so its
    ``on_train_end`` runs before the export's. A run that applied no step of its own saves nothing."""

    def __init__(self) -> None:
        self._start_step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_step = trainer.global_step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == self._start_step:
            return
        for callback in trainer.checkpoint_callbacks:
            behind = isinstance(callback, ModelCheckpoint) and callback._last_global_step_saved != trainer.global_step
            if behind and callback.save_last:
                # Lightning's own save of last.ckpt (the same file name, state and bookkeeping as its periodic saves)
                callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))
