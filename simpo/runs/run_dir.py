"""The run directory: start fresh only where no run is, resume in place, never overwrite a run by accident, and never
remove a file that the project did not write."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from simpo.errors import ConfigError, MissingFileError, RunDirError
from simpo.io import remove_stale_temporaries, target_name, write_json
from simpo.runs.lock import LOCK_FILE
from simpo.runs.outputs import OWNER_FILE, outside_run_dir, owner_record
from simpo.runs.outputs import shown_names as _shown
from simpo.runs.run_status import read_status

__all__ = ["RunDirError", "RunPlan", "apply", "earlier_contents", "plan_run_dir"]

log = logging.getLogger(__name__)

# Written by Hydra for the current command before train.py runs, and the owner's lock: not a sign of an earlier run.
HYDRA_FILES = frozenset({".hydra", "train.log", LOCK_FILE})
# A run of this project was here: the first files train.py writes (before its first step) and its checkpoints.
MARKERS = frozenset({"status.json", "config.yaml", "checkpoints"})
# Everything train.py writes into its run directory with the shipped config: the run's own files. Anything else there
# (a scheduler's log, someone's notes) is foreign: never removed, and no sign of a run.
RUN_FILES = MARKERS | {"hf", "metrics.csv", "hparams.yaml", "data_report.json", "tensorboard", "wandb", "wandb_run_id"}


@dataclass(frozen=True)
class RunPlan:
    """How this command uses its run directory.

    Attributes:
        run_dir: the directory.
        ckpt_path: the checkpoint to resume from (a file, or a directory for sharded checkpoints), or ``None``.
        cleared: the earlier run's own files removed before starting (``overwrite=true``, or ``ckpt_path=auto``
            replacing an attempt that never saved a checkpoint); foreign files are never in it.
        checkpoint_dir: where the run's checkpoints go (``callbacks.model_checkpoint.dirpath``), ``None`` for
            ``<run_dir>/checkpoints``.
        clear_checkpoints: remove the checkpoints in a ``checkpoint_dir`` outside the run directory (the replaced
            run's, with ``overwrite=true``).
    """

    run_dir: Path
    ckpt_path: str | None
    cleared: tuple[str, ...] = ()
    checkpoint_dir: Path | None = None
    clear_checkpoints: bool = False

    @property
    def checkpoints(self) -> Path:
        """The checkpoint directory."""
        return self.checkpoint_dir if self.checkpoint_dir is not None else self.run_dir / "checkpoints"

    @property
    def checkpoints_outside(self) -> bool:
        """Whether the checkpoint directory lies outside the run directory (owned as an output of its own)."""
        return outside_run_dir(self.checkpoints, self.run_dir)


def _resolve_checkpoint(ckpt_path: str | None, run_dir: Path, checkpoints: Path) -> str | None:
    """``last`` -> ``<checkpoints>/last.ckpt``; ``auto`` -> the same if it exists, else ``None``; a path must exist;
    ``None`` starts fresh."""
    if ckpt_path is None:
        return None
    if not isinstance(ckpt_path, str):  # Hydra passes ckpt_path=1 as an integer
        raise ConfigError(f"ckpt_path must be a path, last, auto or null, not {ckpt_path!r}")
    last = checkpoints / "last.ckpt"
    if ckpt_path == "auto":
        return str(last) if last.exists() else None
    path = last if ckpt_path == "last" else Path(ckpt_path).expanduser()
    if not path.exists():  # a file, or a directory for sharded (FSDP) checkpoints
        hint = ""
        if ckpt_path == "last" and (run_dir / "status.json").is_file():
            hint = (f" (the run in {run_dir} never saved a checkpoint: start it again with ckpt_path=auto, or without "
                    "ckpt_path)")  # fmt: skip
        elif ckpt_path == "last":
            hint = f" (set hydra.run.dir to the directory of the run to resume; {checkpoints} has no last.ckpt)"
        raise MissingFileError(f"ckpt_path={ckpt_path}: no checkpoint at {path}{hint}")
    return str(path)


def earlier_contents(run_dir: Path) -> list[str]:
    """Names of the entries of ``run_dir`` that an earlier run or someone else left (Hydra's files for this command
    and the lock excluded)."""
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir() if p.name not in HYDRA_FILES)


def own_files(names: list[str]) -> list[str]:
    """Those of ``names`` that train.py writes (``RUN_FILES``, and the temporaries of their atomic writes)."""
    return [name for name in names if target_name(name) in RUN_FILES]


def plan_run_dir(
    run_dir: Path,
    ckpt_path: str | None,
    overwrite: bool = False,
    is_writer: bool = True,
    checkpoint_dir: Path | None = None,
) -> RunPlan:
    """Decide how to use ``run_dir``; nothing is written or removed yet (see ``apply``), except that a save of
    ``checkpoints/last.ckpt`` that a killed run left half-swapped is finished or undone first (on file systems without
    an atomic exchange, ``simpo.io.remove_stale_temporaries``), so that ``ckpt_path=last`` finds the checkpoint.

    The directory holds a run when one of ``MARKERS`` is there. Only the run's own files (``RUN_FILES``) are ever
    removed; foreign files (a scheduler's log, notes) neither count as a run nor are touched.

    Args:
        run_dir: the run directory (``hydra.run.dir``).
        ckpt_path: the ``ckpt_path`` key: ``None``, ``last``, ``auto`` or a checkpoint path.
        overwrite: the ``overwrite`` key: replace an earlier run in ``run_dir`` (its own files only).
        is_writer: this process writes the run directory (global rank 0). The others neither check its contents
            (rank 0 may already have written into it) nor clear anything.
        checkpoint_dir: ``callbacks.model_checkpoint.dirpath`` (``None``: ``<run_dir>/checkpoints``), where
            ``ckpt_path=last`` looks. One outside the run directory is checked and locked as an output of its own
            (``simpo.runs.outputs``); ``overwrite=true`` clears its checkpoints too.

    A directory whose only run never saved a checkpoint and did not complete (status failed, interrupted or running)
    is started again (its files are cleared); ``ckpt_path=auto`` behaves the same way.

    Raises:
        RunDirError: a fresh start in a directory that holds an earlier run, without ``overwrite=true``; files that
            train.py would write but no run of this project left (with or without ``overwrite``); a checkpoint of
            another run continued in a directory that holds a run.
        FileNotFoundError: ``ckpt_path`` names a checkpoint that does not exist.
    """
    checkpoints = checkpoint_dir if checkpoint_dir is not None else run_dir / "checkpoints"
    if is_writer and ckpt_path in ("last", "auto"):
        remove_stale_temporaries(checkpoints, "last.ckpt")
    resolved = _resolve_checkpoint(ckpt_path, run_dir, checkpoints)
    found = earlier_contents(run_dir) if is_writer else []
    own = own_files(found)
    holds_run = any(name in MARKERS for name in found)
    foreign = sorted(set(found) - set(own))
    if foreign:
        log.info("%s holds files that are not this project's, which are left as they are: %s", run_dir, _shown(foreign))
    if resolved is not None:
        if overwrite:
            raise RunDirError(f"overwrite=true and ckpt_path={ckpt_path} contradict each other: set only one of them")
        mine = Path(resolved).resolve().is_relative_to(checkpoints.resolve())
        if holds_run and not mine:
            raise RunDirError(
                f"ckpt_path={ckpt_path} belongs to another run, and the run directory {run_dir} already holds a run "
                f"({_shown(own)}): continuing there would overwrite it. Pick a new directory (hydra.run.dir=..., or "
                "hydra.sweep.dir in a sweep)"
            )
        return RunPlan(run_dir, resolved, checkpoint_dir=checkpoint_dir)
    clear_outside = overwrite and is_writer and outside_run_dir(checkpoints, run_dir)
    if not own:
        return RunPlan(run_dir, None, checkpoint_dir=checkpoint_dir, clear_checkpoints=clear_outside)
    if not holds_run:
        raise RunDirError(
            f"the run directory {run_dir} holds {_shown(own)}, which train.py writes, but no run of this project left "
            f"them (no {', '.join(sorted(MARKERS))}): they are not removed, even with overwrite=true. Move them away "
            "or pick a new directory (hydra.run.dir=..., or hydra.sweep.dir in a sweep)"
        )
    if overwrite:
        return RunPlan(run_dir, None, tuple(own), checkpoint_dir, clear_outside)
    status = (read_status(run_dir) or {}).get("status")
    if status in ("failed", "interrupted", "running") and not _has_checkpoints(checkpoints):
        # an earlier attempt that saved nothing to resume (e.g. stopped before its first checkpoint): start again
        return RunPlan(run_dir, None, tuple(own), checkpoint_dir)
    raise RunDirError(
        f"the run directory {run_dir} already holds a run ({_shown(own)}; status: {status or 'unknown'}): resume it "
        "with ckpt_path=last, pick a new directory (hydra.run.dir=..., or hydra.sweep.dir in a sweep), or replace it "
        "with overwrite=true (which removes the run's own files only)"
    )


def _has_checkpoints(directory: Path) -> bool:
    """Whether the checkpoint directory holds something to resume from: a whole checkpoint file or a sharded
    checkpoint's directory, not the temporary of a save that was killed (the next start removes it)."""
    return directory.is_dir() and any(p.name.endswith(".ckpt") for p in directory.iterdir())


def apply(plan: RunPlan) -> None:
    """Create the run directory, remove what ``plan`` clears, and clean up after a killed earlier attempt (its
    temporaries, an interrupted swap of ``hf/``: ``simpo.io.remove_stale_temporaries``)."""
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    for directory in (plan.run_dir, plan.checkpoints):
        remove_stale_temporaries(directory)
    if plan.checkpoints_outside:
        if plan.clear_checkpoints:
            _clear_checkpoints(plan.checkpoints)
        plan.checkpoints.mkdir(parents=True, exist_ok=True)
        write_json(plan.checkpoints / OWNER_FILE, owner_record(plan.run_dir))  # the checkpoints there are this run's
    for name in plan.cleared:
        path = plan.run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    if plan.cleared:
        log.warning("removed the earlier run's files from %s: %s", plan.run_dir, ", ".join(plan.cleared))


def _clear_checkpoints(directory: Path) -> None:
    """Remove the checkpoints (``*.ckpt`` files, sharded checkpoints' directories) of the run being replaced from a
    checkpoint directory outside its run directory; anything else there stays."""
    removed = []
    for entry in sorted(directory.iterdir()) if directory.is_dir() else []:
        if target_name(entry.name).endswith(".ckpt"):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry.name)
    if removed:
        log.warning("overwrite=true: removed the replaced run's checkpoints from %s: %s", directory, _shown(removed))
