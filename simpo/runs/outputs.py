"""Output paths are checked before training: a directory the run will write at its end (the Hugging Face export),
or all along (the cache), must be one it can create and write, or the command is refused naming the key, before
anything is written.

An output directory outside the run directory is owned as the run directory is: locked while a run uses it
(``simpo.runs.lock``), recognised by the owner file the project writes into it (``OWNER_FILE``, naming the run), and
never replacing files the project did not write (``check_owned_directory``)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from simpo.errors import RunDirError
from simpo.runs.lock import LOCK_FILE, RunDirLock

log = logging.getLogger(__name__)

OWNER_FILE = ".simpo-owner.json"  # in an output directory the project wrote: {"run_dir": <the run that wrote it>}


def check_writable_directory(path: str | Path, key: str) -> Path:
    """Refuse, naming ``key``, a directory in which files cannot be created: ``path`` itself when it exists, else the
    nearest ancestor that exists (tried with a probe file, removed at once). Returns the path, user-expanded.

    Raises:
        RunDirError: a file in the way, or a directory this user cannot write (permissions, a read-only mount).
    """
    target = Path(path).expanduser()
    _check_creatable_in(target, key, path)
    return target


def _check_creatable_in(start: Path, key: str, path: str | Path) -> None:
    """A file can be created in ``start``, or in its nearest ancestor that exists (probed); messages name
    ``key``=``path``."""
    where = start
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        raise RunDirError(f"{key}={path} cannot be created: {where} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".simpo-write-probe-", dir=where)
    except OSError as error:
        raise RunDirError(
            f"{key}={path} cannot be written: creating a file in {where} fails ({error.strerror or error}); "
            "give a directory this user can write"
        ) from None
    os.close(fd)
    os.unlink(probe)


def check_output_directory(path: str | Path, key: str) -> Path:
    """Refuse, naming ``key``, a directory that cannot be written as a whole: ``path`` is written beside itself
    (a temporary in its parent, renamed onto it), so its parent, or the nearest ancestor that exists, must be a
    directory in which a file can be created (tried with a probe file, removed at once: permissions, read-only
    mounts and special file systems answer for themselves). Returns the path, user-expanded.

    Raises:
        RunDirError: ``path`` names no directory (``.``, ``/``), is a file, or cannot be created or written.
    """
    target = Path(path).expanduser()
    if not target.name or target.name in (".", ".."):
        raise RunDirError(f"{key}={path} names no directory of its own: give a directory path such as {path}/hf")
    if target.exists() and not target.is_dir():
        raise RunDirError(f"{key}={path} is a file, not a directory: give a directory path")
    _check_creatable_in(target.parent, key, path)
    return target


def shown_names(names: list[str], most: int = 6) -> str:
    """``a, b, c, ...``: the first ``most`` of ``names`` for a message."""
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")


def owner_record(run_dir: str | Path) -> dict[str, str]:
    """What ``OWNER_FILE`` holds: the run directory (absolute) of the run that wrote the output."""
    return {"run_dir": str(Path(run_dir).expanduser().resolve())}


def read_owner(directory: Path) -> str | None:
    """The run directory named by ``directory``'s ``OWNER_FILE``, or ``None`` (no file, or not one the project
    wrote)."""
    try:
        record = json.loads((directory / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    owner = record.get("run_dir") if isinstance(record, dict) else None
    return owner if isinstance(owner, str) else None


def outside_run_dir(path: str | Path, run_dir: str | Path) -> bool:
    """Whether ``path`` lies outside ``run_dir`` (whose own rules, ``simpo.runs.run_dir``, cover what is inside)."""
    return not Path(path).expanduser().resolve().is_relative_to(Path(run_dir).expanduser().resolve())


def check_owned_directory(path: str | Path, key: str, run_dir: str | Path, overwrite: bool, what: str) -> None:
    """Refuse, naming ``key``, to write ``what`` (e.g. "Hugging Face export") into a directory outside the run
    directory that holds files the project did not write, or another run's output without ``overwrite=true``.

    Absent or empty (this run's lock aside), or written by this same run (a resume): fine.

    Raises:
        RunDirError: the directory holds foreign files (never replaced, even with ``overwrite=true``), or another
            run's output (``overwrite=true`` replaces it).
    """
    directory = Path(path).expanduser()
    if not directory.is_dir():
        return
    entries = sorted(entry.name for entry in directory.iterdir() if entry.name != LOCK_FILE)
    if not entries:
        return
    owner = read_owner(directory)
    if owner is None:
        raise RunDirError(
            f"{key}={path} holds files this project did not write ({shown_names(entries)}; no {OWNER_FILE}): nothing "
            f"there is replaced, even with overwrite=true. Give a new or empty directory for the {what} (an output of "
            f"an earlier version of this project has no {OWNER_FILE}: move it away first)"
        )
    if owner == owner_record(run_dir)["run_dir"]:
        return
    if overwrite:
        log.warning("overwrite=true: the %s of the run in %s at %s is replaced by this run's", what, owner, path)
        return
    raise RunDirError(
        f"{key}={path} holds the {what} of another run ({owner}): give another directory, or replace it with "
        "overwrite=true"
    )


@contextlib.contextmanager
def hold_directories(run_dir: str | Path, outputs: Mapping[str, str | Path], is_writer: bool = True) -> Iterator[None]:
    """Hold the locks of the run directory and of ``outputs`` (``{key: directory}``, those outside the run directory)
    for the life of the block; only the writing process (global rank 0) locks.

    Raises:
        RunDirInUseError: another live process holds one of them (the message names the key and the holder).
    """
    with contextlib.ExitStack() as held:
        held.enter_context(RunDirLock(Path(run_dir), is_writer))
        for key, path in outputs.items():
            held.enter_context(RunDirLock(Path(path).expanduser(), is_writer, key=key))
        yield
