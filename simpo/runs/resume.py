"""Resuming: read what a checkpoint holds, refuse a resume that would train nothing, and name what changed.

A resume must either continue training or say why not. Two ways it silently did nothing before:
the checkpoint is already at ``trainer.max_steps``, or the run stopped at ``max_steps`` in the middle of an epoch,
which Lightning records as a finished epoch, so that raising ``max_steps`` later found ``max_epochs`` reached.
``continue_stopped_epoch`` repairs the second case from the checkpoint's own loop state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from simpo.errors import CheckpointError
from simpo.io import read_torch_file

log = logging.getLogger(__name__)

# Where the classes and functions named by ``_target_`` in the configs of earlier checkpoints live now: a whole
# class path, or a module whose contents moved (its dotted prefix).
MOVED_TARGETS = {
    "simpo.loss.SimPOLoss": "simpo.objectives.simpo.SimPO",
    "simpo.logprobs": "simpo.core.logprobs",
    "simpo.chunked_logprobs": "simpo.core.chunked_logprobs",
    "simpo.labelled_head": "simpo.core.labelled_head",
    "simpo.attention_masks": "simpo.core.attention_masks",
    "simpo.finite": "simpo.core.finite",
    "simpo.metrics": "simpo.core.metrics",
    "simpo.rng": "simpo.core.rng",
    "simpo.value_checks": "simpo.core.value_checks",
    "simpo.global_batch": "simpo.core.global_batch",
    "simpo.policy": "simpo.models.policy",
    "simpo.adapters": "simpo.models.adapters",
    "simpo.pretrained_source": "simpo.models.pretrained_source",
    "simpo.run_dir": "simpo.runs.run_dir",
    "simpo.run_status": "simpo.runs.run_status",
    "simpo.resume": "simpo.runs.resume",
    "simpo.module": "simpo.training.module",
    "simpo.optim": "simpo.training.optim",
    "simpo.fsdp": "simpo.training.fsdp",
    "simpo.nonfinite": "simpo.training.nonfinite",
    "simpo.loggers": "simpo.training.loggers",
    "simpo.checkpoint_io": "simpo.training.checkpoint_io",
    "simpo.entrypoint": "simpo.config.entrypoint",
    "simpo.config_checks": "simpo.config.config_checks",
}

# Keys whose change on resume is expected (where the run is, how it is launched or shown): not reported.
EXPECTED_CHANGES = (
    "ckpt_path", "run_dir", "overwrite", "trainer.default_root_dir", "data.report_dir", "callbacks.", "logger."
)  # fmt: skip


@dataclass
class CheckpointInfo:
    """What a checkpoint records about its run.

    Attributes:
        path: the checkpoint (a ``.ckpt`` file or a sharded checkpoint directory).
        global_step: optimizer steps taken.
        epochs_completed: epochs the fit loop counts as finished.
        epoch_exhausted: the last epoch ran out of batches (``False`` when it stopped early, e.g. at ``max_steps``).
        config: the run's resolved training config (``None`` for checkpoints of other programs).
        loader: the training loader's saved position (``epoch``, ``batches_done``, ``seed``, ``global_batch_rows``).
        shapes: the shape of every weight the checkpoint holds (``state_dict`` names), ``None`` where they cannot be
            read without loading them (a sharded checkpoint).
        trainable_only: the checkpoint holds only the trainable weights (adapters), not the frozen base.
        train_rows: the fingerprint of the rows it trained on (``None`` in checkpoints of earlier versions).
    """

    path: Path
    global_step: int
    epochs_completed: int
    epoch_exhausted: bool
    config: dict[str, Any] | None = field(default=None, repr=False)
    loader: dict[str, int] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] | None = field(default=None, repr=False)
    trainable_only: bool = False
    train_rows: str | None = None


def _siblings(path: Path) -> list[str]:
    """Other checkpoints beside ``path`` (inside it, when it is a checkpoint directory)."""
    directory = path if path.is_dir() and not (path / "meta.pt").is_file() else path.parent
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p != path and (p.suffix == ".ckpt" or (p / "meta.pt").is_file())]
    return sorted(str(p) for p in found)


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> CheckpointInfo:
    """Read a checkpoint's step, loop state and config (tensors are memory-mapped, not read).

    Raises:
        CheckpointError: the file is truncated, not a checkpoint, or holds objects that are never loaded (see
            ``simpo.io``); the message lists the other checkpoints beside it.
    """
    path = Path(path)
    try:
        meta = read_torch_file(path, key, mmap=not path.is_dir())
        step = int(meta["global_step"])
    except (CheckpointError, KeyError, TypeError, ValueError) as err:
        others = _siblings(path)
        alternatives = (
            f"other checkpoints there: {', '.join(others)}. Resume from one of them with {key}=<path>"
            if others
            else "no other checkpoint is there"
        )
        reason = str(err) if isinstance(err, CheckpointError) else f"{key}={path}: not a checkpoint of train.py"
        raise CheckpointError(f"{reason}; {alternatives}") from None
    fit_loop = meta.get("loops", {}).get("fit_loop", {})
    completed = int(fit_loop.get("epoch_progress", {}).get("current", {}).get("completed", 0))
    exhausted = bool(fit_loop.get("epoch_loop.batch_progress", {}).get("is_last_batch", True))
    config = current_targets((meta.get("hyper_parameters") or {}).get("config"))
    data_state = meta.get("PreferenceDataModule") or {}
    loader = data_state.get("train_loader") or {}
    weights = meta.get("state_dict")
    shapes = None
    if isinstance(weights, dict) and weights and all(isinstance(v, torch.Tensor) for v in weights.values()):
        shapes = {name: tuple(value.shape) for name, value in weights.items()}
    trainable_only = bool(meta.get("trainable_only", False))
    train_rows = data_state.get("train_rows")
    return CheckpointInfo(path, step, completed, exhausted, config, dict(loader), shapes, trainable_only, train_rows)


def current_target(target: Any) -> Any:
    """Today's path of a ``_target_`` that an earlier version stored (``MOVED_TARGETS``); others are returned as is."""
    if not isinstance(target, str):
        return target
    if target in MOVED_TARGETS:
        return MOVED_TARGETS[target]
    module, _, name = target.rpartition(".")
    return f"{MOVED_TARGETS[module]}.{name}" if module in MOVED_TARGETS else target


def current_targets(config: Any) -> Any:
    """``config`` (a stored config: nested dicts and lists) with every ``_target_`` value at today's path, so a resume
    never reports a moved class as a changed setting."""
    if isinstance(config, dict):
        return {k: current_target(v) if k == "_target_" else current_targets(v) for k, v in config.items()}
    if isinstance(config, list):
        return [current_targets(v) for v in config]
    return config


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and empty mappings are leaves)."""
    out: dict[str, Any] = {}
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{key}."))
        else:
            out[key] = value
    return out


def _expected(key: str) -> bool:
    return any(key == name or (name.endswith(".") and key.startswith(name)) for name in EXPECTED_CHANGES)


def changed_settings(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The keys whose values differ between two resolved configs, as ``{key: {"before": x, "after": y}}``
    (absent values are ``"<absent>"``; the keys of ``EXPECTED_CHANGES`` are left out)."""
    old, new = flatten(before), flatten(after)
    changes = {}
    for key in sorted(set(old) | set(new)):
        if not _expected(key) and old.get(key, "<absent>") != new.get(key, "<absent>"):
            changes[key] = {"before": old.get(key, "<absent>"), "after": new.get(key, "<absent>")}
    return changes


# Keys that decide which weights a checkpoint holds, or what they mean: a resume must keep them.
MODEL_KEYS = ("model.name_or_path", "model.tokenizer", "model.architecture.", "peft.")
MODEL_KEYS_FREE = ("peft.export",)  # only how the end result is written


def check_resume_matches(
    info: CheckpointInfo, config: dict[str, Any], weights: dict[str, tuple[int, ...]], train_rows: str | None = None
) -> None:
    """The one check of what a checkpoint needs against what this command gives, run before anything is written:
    the settings that decide the weights (``MODEL_KEYS``: the model, its tokenizer, the adapters) must be the
    checkpoint's, and every weight the checkpoint holds must exist in the policy built from this config with the
    same shape (and, for a full checkpoint, every weight of the policy must be in it).

    Args:
        info: the checkpoint.
        config: this run's resolved config.
        weights: ``{name: shape}`` of this run's module (``state_dict`` names, e.g. ``policy.model.norm.weight``).
        train_rows: the fingerprint of this run's training rows (``PreferenceDataModule.train_rows_fingerprint``).

    Raises:
        CheckpointError: naming each key that differs (checkpoint -> this run) and the weights that do not fit; or
            training rows other than the checkpoint's (its saved position would skip or repeat rows of the new data).
    """
    problems = []
    if info.config is not None:
        adapters = [info.config.get("peft"), config.get("peft")]
        if bool(adapters[0]) != bool(adapters[1]):  # adapters on one side only: one line, not one per peft key
            before, after = (f"peft={a['method']}" if a else "no adapters" for a in adapters)
            problems.append(f"peft: {before} in the checkpoint, {after} here")
        for key, change in changed_settings(info.config, config).items():
            decisive = any(key == k or (k.endswith(".") and key.startswith(k)) for k in MODEL_KEYS)
            one_sided = key.startswith("peft.") and bool(adapters[0]) != bool(adapters[1])
            if decisive and not one_sided and not key.startswith(MODEL_KEYS_FREE):
                problems.append(f"{key}: {change['before']!r} in the checkpoint, {change['after']!r} here")
    if info.shapes is not None:
        held = {k: v for k, v in info.shapes.items() if k.startswith("policy.")}
        mine = {k: v for k, v in weights.items() if k.startswith("policy.")}
        wrong = [f"{k} {held[k]} -> {mine[k]}" for k in held if k in mine and tuple(mine[k]) != held[k]]
        unknown = sorted(set(held) - set(mine))
        missing = [] if info.trainable_only else sorted(set(mine) - set(held))  # adapter checkpoints hold only those
        for what, names in (("of another shape", wrong), ("that this run's policy lacks", unknown),
                            ("missing from the checkpoint", missing)):  # fmt: skip
            if names:
                shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
                problems.append(f"{len(names)} weight(s) {what} ({shown})")
    if problems:
        raise CheckpointError(
            f"ckpt_path={info.path} was trained with another model than this config builds: " + "; ".join(problems)
            + ". Resume with the checkpoint's model settings (its config.yaml), or start a new run"
        )
    if info.train_rows is not None and train_rows is not None and info.train_rows != train_rows:
        dataset = (info.config or {}).get("data", {}).get("dataset", "?")
        done = info.loader.get("batches_done", 0)
        raise CheckpointError(
            f"ckpt_path={info.path} trained on other data than this command gives (the training rows differ from "
            f"those of data.dataset={dataset} it was saved with; data.dataset, data.train_split and data.val_size "
            f"decide them): its saved position ({done} batches into an epoch) would skip or repeat rows of the new "
            "data. Resume with the data it trained on, or train on the new data in a new run that starts from its "
            "weights (model.name_or_path=<its run>/hf)"
        )


def check_strategy(info: CheckpointInfo, sharded: bool) -> None:
    """Refuse a sharded (FSDP) checkpoint directory for a run that is not sharded (it cannot read one).

    Raises:
        CheckpointError: naming ``ckpt_path`` and ``strategy=fsdp``.
    """
    if info.path.is_dir() and not sharded:
        raise CheckpointError(
            f"ckpt_path={info.path} is a sharded (FSDP) checkpoint directory: resume it with strategy=fsdp (on any "
            "number of processes)"
        )


def check_progress_left(info: CheckpointInfo, max_steps: int, max_epochs: int | None) -> None:
    """Refuse a resume that cannot take a single optimizer step.

    Raises:
        CheckpointError: the checkpoint is at ``trainer.max_steps`` already, or every epoch allowed by
            ``trainer.max_epochs`` ran to its end.
    """
    if max_steps > 0 and info.global_step >= max_steps:
        raise CheckpointError(
            f"nothing left to train: the checkpoint {info.path} is at step {info.global_step} and "
            f"trainer.max_steps={max_steps}; raise trainer.max_steps to train further"
        )
    epochs_done = info.epochs_completed if info.epoch_exhausted else max(info.epochs_completed - 1, 0)
    if max_epochs is not None and max_epochs > 0 and epochs_done >= max_epochs:
        raise CheckpointError(
            f"nothing left to train: the checkpoint {info.path} finished {epochs_done} epoch(s) "
            f"(step {info.global_step}) and trainer.max_epochs={max_epochs}; raise trainer.max_epochs to train further"
        )


def check_same_data_order(info: CheckpointInfo, cfg: Any, global_batch_rows: int) -> None:
    """Refuse a resume whose data order would not continue the checkpoint's.

    The resumed epoch is the same permutation of the rows only with the same seed, and its saved position (batches
    handed out) means the same rows only with the same pairs per global batch (``data.batch_size`` x processes).

    Raises:
        CheckpointError: naming ``seed`` / ``data.seed`` or ``data.batch_size``.
    """
    if info.config is not None:
        for key in ("seed", "data.seed"):
            before = flatten(info.config).get(key)
            after = flatten(dict(cfg) if isinstance(cfg, dict) else _container(cfg)).get(key)
            if before is not None and before != after:
                raise CheckpointError(
                    f"{key}={after} differs from the checkpoint's {key}={before}: the resumed epoch's data order "
                    f"depends on it; resume with {key}={before}"
                )
    saved_rows = info.loader.get("global_batch_rows")
    if info.loader.get("batches_done", 0) > 0 and saved_rows is not None and saved_rows != global_batch_rows:
        raise CheckpointError(
            f"the checkpoint stopped {info.loader['batches_done']} batches into an epoch with {saved_rows} pairs per "
            f"global batch (data.batch_size x processes), this run has {global_batch_rows}: its saved position would "
            "skip or repeat pairs. Resume with the same data.batch_size x trainer.devices (the accumulation may change)"
        )


def _container(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def continue_stopped_epoch(checkpoint: dict[str, Any]) -> bool:
    """Mark an epoch that stopped early (at ``max_steps``) as still in progress, in a checkpoint being loaded.

    Lightning counts the epoch as completed when ``max_steps`` ends it, although the data loader stopped in
    its middle; resumed with a larger ``max_steps``, the fit loop would then find ``max_epochs`` reached and train
    nothing. The epoch counters are set back so the loop continues the epoch where the loader's saved position is.

    Returns:
        True when the loop state was changed.
    """
    fit_loop = checkpoint.get("loops", {}).get("fit_loop")
    if not fit_loop or fit_loop.get("epoch_loop.batch_progress", {}).get("is_last_batch", True):
        return False
    changed = False
    for counts in fit_loop.get("epoch_progress", {}).values():  # "total" and "current"
        if counts.get("completed", 0) >= counts.get("started", 0) > 0:
            counts["processed"] = counts["completed"] = counts["started"] - 1
            changed = True
    if changed:
        checkpoint["epoch"] = max(int(checkpoint.get("epoch", 0)), 0)
        log.info("the checkpoint's epoch had stopped early (at trainer.max_steps): continuing it")
    return changed
