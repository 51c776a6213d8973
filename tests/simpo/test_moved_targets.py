"""Checkpoints of earlier versions name classes at their old paths: those are mapped to today's before anything
compares or builds them, so a moved class is never a changed setting."""

from __future__ import annotations

import hydra.utils

from simpo.io import read_torch_file
from simpo.runs.resume import changed_settings, current_target, current_targets
from simpo.training.fsdp import AtomicModelParallelStrategy
from tests.simpo.test_io import ASSET


def test_old_paths_map_to_todays_and_resolve():
    assert current_target("simpo.fsdp.AtomicModelParallelStrategy") == "simpo.training.fsdp.AtomicModelParallelStrategy"
    assert current_target("simpo.loggers.wandb_logger") == "simpo.training.loggers.wandb_logger"
    assert current_target("simpo.loss.SimPOLoss") == "simpo.objectives.simpo.SimPO"
    for unmoved in ("lightning.pytorch.Trainer", "callbacks.hf_export.HFExport", "simpo.objectives.dpo.DPO", 3):
        assert current_target(unmoved) == unmoved
    moved = current_target("simpo.fsdp.AtomicModelParallelStrategy")
    assert hydra.utils.get_class(moved) is AtomicModelParallelStrategy


def test_a_moved_class_is_not_a_changed_setting():
    stored = read_torch_file(ASSET)["hyper_parameters"]["config"]  # written before the move
    stored["trainer"]["strategy"] = {"_target_": "simpo.fsdp.AtomicModelParallelStrategy", "cpu_offload": False}
    today = current_targets(stored)
    assert today["trainer"]["strategy"]["_target_"] == "simpo.training.fsdp.AtomicModelParallelStrategy"
    assert today["logger"]["csv"]["_target_"] == "simpo.training.loggers.ResumableCSVLogger"
    moved = {**stored, "trainer": {**stored["trainer"], "strategy": dict(today["trainer"]["strategy"])}}
    assert changed_settings(today, moved) == {}
    assert "trainer.strategy._target_" in changed_settings(stored, moved)  # what the mapping prevents
