"""Checkpoints of an adapter run hold only what trains: the adapters (and ``modules_to_save``) and their optimizer
state, not the frozen base model, which a resume rebuilds from ``model.name_or_path`` or the seed."""

from __future__ import annotations

from typing import Any

import lightning as L

from simpo.models.adapters import trainable_names


class TrainableOnlyCheckpoint(L.Callback):
    """Drop the frozen policy weights from ``checkpoint["state_dict"]`` on save (any strategy: a sharded FSDP2
    checkpoint uses the same names). The module must load with ``strict_loading = False`` so that the base weights
    it already holds are kept on resume; the optimizer state holds the trainable parameters only anyway."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        keep = trainable_names(pl_module.policy, prefix="policy.")
        state = checkpoint["state_dict"]
        checkpoint["state_dict"] = {k: v for k, v in state.items() if not k.startswith("policy.") or k in keep}
        checkpoint["trainable_only"] = True
