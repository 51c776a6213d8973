"""Output paths are checked before training: a directory the run will write at its end (the Hugging Face export),
or all along (the cache), must be one it can create and write, or the command is refused naming the key, before
anything is written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from simpo.errors import RunDirError


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
