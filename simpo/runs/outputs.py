"""Output paths are checked before training: a directory the run will write at its end (the Hugging Face export)
must be one it can create and write, or the command is refused naming the key, before anything is written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from simpo.errors import RunDirError


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
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RunDirError(f"{key}={path} cannot be created: {ancestor} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".simpo-write-probe-", dir=ancestor)
    except OSError as error:
        raise RunDirError(
            f"{key}={path} cannot be written: creating a file in {ancestor} fails ({error.strerror or error}); "
            "give a directory this user can write"
        ) from None
    os.close(fd)
    os.unlink(probe)
    return target
