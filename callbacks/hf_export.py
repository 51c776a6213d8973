"""Export the trained policy and its tokenizer in Hugging Face format at the end of training."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.strategies import ModelParallelStrategy

from simpo.core.finite import describe_nonfinite, nonfinite_tensors
from simpo.errors import ExportError
from simpo.io import atomic_directory, write_json
from simpo.models.adapters import is_adapted, save_export
from simpo.runs.outputs import OWNER_FILE, owner_record
from simpo.training.fsdp import gather_full_state_dict
from simpo.training.nonfinite import NonFiniteError

log = logging.getLogger(__name__)


class HFExport(L.Callback):
    """Write ``policy.save_pretrained`` (safetensors shards) and the tokenizer (with its chat template).

    Under FSDP the full state dict is gathered to CPU on global rank 0 only (every rank takes part), so the
    export works for models larger than one process's share of memory. The files are written to
    a temporary directory beside it on rank 0 and swapped into place (``simpo.io.atomic_directory``), so ``dirpath`` is
    the previous complete export or the new complete one. The
    result loads with ``AutoModelForCausalLM.from_pretrained``; a policy with adapters exports the merged model, or
    with ``peft.export=adapter`` the adapter alone (loads with peft onto its base). Weights holding NaN/inf are
    never exported (``NonFiniteError``), and a run none of whose steps was applied exports nothing. The export holds
    ``.simpo-owner.json`` naming the run (``simpo.runs.outputs``: a directory outside the run directory is only ever
    replaced by the run that wrote it, or with ``overwrite=true``). A directory that cannot be written stops the run
    with ``ExportError`` naming ``dirpath`` (``train.py`` checks it before training, and checkpoints the last step
    before the export: ``callbacks.final_checkpoint``).

    Args:
        dirpath: target directory (``<run dir>/hf`` in the default configuration).
        max_shard_size: largest safetensors shard.
    """

    def __init__(self, dirpath: str, max_shard_size: str = "5GB") -> None:
        self.dirpath = Path(dirpath)
        self.max_shard_size = max_shard_size

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_step = trainer.global_step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        guard = getattr(pl_module, "nonfinite", None)
        taken = trainer.global_step - getattr(self, "_start_step", 0)
        if guard is not None and taken <= guard.skipped_here:
            log.warning("not exporting %s: no optimizer step of this run was applied", self.dirpath)
            return
        if taken > 0 and getattr(pl_module, "moving_steps_here", 1) == 0:
            log.warning("not exporting %s: every step of this run ran at learning rate 0 (the weights are the initial "
                        "ones)", self.dirpath)  # fmt: skip
            return
        bad = nonfinite_tensors(pl_module.policy.named_parameters())
        if trainer.strategy.reduce_boolean_decision(bool(bad), all=False):
            raise NonFiniteError(
                f"not exporting {self.dirpath}: the weights hold NaN/inf "
                f"({describe_nonfinite(bad) if bad else 'on another process'})"
            )
        sharded = isinstance(trainer.strategy, ModelParallelStrategy)
        state_dict = gather_full_state_dict(pl_module.policy) if sharded else None
        failure: OSError | None = None
        if trainer.is_global_zero:
            try:
                self._write(pl_module, state_dict, trainer.default_root_dir)
            except OSError as error:  # unwritable, full disk, ...: the temporary is gone, the previous export stays
                failure = error
        if trainer.strategy.reduce_boolean_decision(failure is not None, all=False):  # every rank stops, none waits
            reason = f"{failure.strerror or failure}" if failure is not None else "it failed on rank 0"
            raise ExportError(
                f"callbacks.hf_export.dirpath={self.dirpath}: the export could not be written ({reason}); the training "
                f"is saved in the last checkpoint of step {trainer.global_step}"
            ) from failure
        if trainer.is_global_zero:
            log.info("exported the policy in Hugging Face format to %s", self.dirpath)
        trainer.strategy.barrier("hf_export")

    def _write(self, pl_module: L.LightningModule, state_dict: dict | None, run_dir: str) -> None:
        with atomic_directory(self.dirpath) as tmp:
            if is_adapted(pl_module.policy):
                peft = (pl_module.hparams.get("config") or {}).get("peft") or {}
                save_export(pl_module.policy, tmp, state_dict, peft.get("export", "merged"), self.max_shard_size)
            else:
                pl_module.policy.save_pretrained(
                    tmp, state_dict=state_dict, safe_serialization=True, max_shard_size=self.max_shard_size
                )
            if pl_module.tokenizer is not None:
                pl_module.tokenizer.save_pretrained(tmp)
            write_json(tmp / OWNER_FILE, owner_record(run_dir))  # marks the directory as this run's export
