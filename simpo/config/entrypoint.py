"""What ``train.py`` and ``evaluate.py`` share: the ``${project_root:}`` resolver and building the objective.

Entry points import this package module, never each other.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import OmegaConf

from simpo.errors import CheckpointError, UserError
from simpo.objectives import OBJECTIVES, Objective
from simpo.runs.resume import current_target

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def default_precision() -> str:
    """``trainer.precision`` by default: ``bf16-mixed`` (fp32 weights and optimizer state, bf16 compute) on a GPU
    that supports bf16, else ``32-true``."""
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"


def register_resolvers() -> None:
    """Register ``${project_root:}`` (the repository's directory, for the bundled data set's path) and
    ``${auto_precision:}`` (``default_precision``)."""
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)
    OmegaConf.register_new_resolver("auto_precision", default_precision, replace=True)


class _DropAdverts(logging.Filter):
    """Drops Lightning's advertisement for its cloud logger (it is not about this run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def silence_library_noise() -> None:
    """Hide messages that say nothing about the run and that users read as trouble: Lightning's cloud-logger tip
    and a deprecation warning that Lightning itself triggers inside torch's pytree."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropAdverts) for f in logger.filters):
            logger.addFilter(_DropAdverts())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")


def build(cfg: Any, key: str = "", **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, re-raising the constructor's own error (whose message names the key) instead
    of Hydra's wrapper around it; an unknown or mistyped argument (``TypeError``, e.g. ``+trainer.foo=1``) and
    Lightning's ``MisconfigurationException`` become a ``UserError`` that names the config section ``key``."""
    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, TypeError):
            section = key or "a config section"
            raise UserError(f"{section}: {cause} (check the keys given with +{section}.<name>)") from None
        if isinstance(cause, MisconfigurationException):  # Lightning's word for a setting it cannot use
            raise UserError(f"{key or 'a config section'}: {cause}") from None
        if cause is not None:
            raise cause from None
        raise


@contextmanager
def user_errors_as_messages(logger: logging.Logger) -> Iterator[None]:
    """Turn a ``UserError`` (its message names the cause and the key to change) into one logged line and exit status
    1 (``HYDRA_FULL_ERROR=1`` keeps the traceback); every other exception, a library's ``ValueError`` included, is a
    bug or a failure we did not foresee and keeps its traceback."""
    try:
        yield
    except UserError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        logger.error("%s: %s (HYDRA_FULL_ERROR=1 shows the traceback)", type(error).__name__, error)
        raise SystemExit(1) from None


# What a ``loss._target_`` read from a file may name.
OBJECTIVE_TARGETS = frozenset(f"{kind.__module__}.{kind.__qualname__}" for kind in OBJECTIVES.values())


def check_stored_objective(settings: Mapping[str, Any], stored_in: str) -> None:
    """Refuse a ``loss`` section read from a file unless it names one of ``OBJECTIVE_TARGETS`` with scalar values.

    Raises:
        CheckpointError: naming the file and the offending key.
    """
    target = settings.get("_target_")
    if target not in OBJECTIVE_TARGETS:
        raise CheckpointError(
            f"loss._target_={target!r} in {stored_in} is not an objective of simpo.objectives "
            f"({', '.join(sorted(OBJECTIVE_TARGETS))}): a config read from a file never builds anything else"
        )
    for key, value in settings.items():
        if not (value is None or isinstance(value, (bool, int, float, str))):
            raise CheckpointError(
                f"loss.{key} in {stored_in} is a {type(value).__name__}, not a number or string: a config read from a "
                "file never builds anything"
            )


def build_loss(loss_cfg: Mapping[str, Any], stored_in: str | None = None) -> Objective:
    """The objective of a resolved ``loss`` config section (``_target_`` plus its keys).

    ``stored_in`` names the file the section was read from (a checkpoint's training config): such a section is data,
    so its ``_target_`` must be one of ``simpo.objectives.OBJECTIVES`` and its values plain numbers and strings;
    nothing else named in a file is ever built (``hydra.utils.instantiate`` would call any function it names).

    A ``chunk_size`` key (stored in checkpoints written before it moved to ``model.chunk_size``) is ignored:
    it is a setting of the forward pass, not of the objective; an older checkpoint's ``simpo.loss.SimPOLoss`` is
    today's SimPO objective (same keys).
    """
    settings = {key: value for key, value in loss_cfg.items() if key != "chunk_size"}
    target = settings.get("_target_")
    settings["_target_"] = current_target(target)
    if stored_in is not None:
        check_stored_objective(settings, stored_in)
    objective = build(settings, key="loss")
    if not isinstance(objective, Objective):
        raise UserError(f"loss._target_={target} is not an objective of simpo.objectives")
    return objective
