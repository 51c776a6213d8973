"""What ``train.py`` and ``evaluate.py`` share: the ``${project_root:}`` resolver and building the objective.

Entry points import this package module, never each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import OmegaConf

from simpo.loss import SimPOLoss

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def register_resolvers() -> None:
    """Register ``${project_root:}`` (the repository's directory), used by the bundled data set's path."""
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)


def build_loss(loss_cfg: Mapping[str, Any]) -> SimPOLoss:
    """The objective of a resolved ``loss`` config section (``_target_`` plus its keys).

    A ``chunk_size`` key (stored in checkpoints written before it moved to ``model.chunk_size``) is ignored:
    it is a setting of the forward pass, not of the objective.
    """
    settings = {key: value for key, value in loss_cfg.items() if key != "chunk_size"}
    return instantiate(settings)
