"""One owner per run directory: an advisory lock held for the life of the process that writes it.

The lock is ``fcntl.flock`` on ``<run_dir>/.simpo.lock``: the kernel releases it when the process ends, however it
ends (an exception, a signal, kill -9), so a lock never outlives its holder. The holder writes its process id, host,
start time and command into the file, which is what a second process that is refused reads back, and removes the file
when it is done, so that a command leaves no trace of it (a killed holder leaves the file, unlocked: the next process
takes it). A process that locked a file which its holder removed meanwhile sees that the path no longer names its file
and tries again. Only the process that writes the run directory (rank 0 of a multi-process run) takes the lock. On a
file system without locks (some Lustre or NFS mounts) the run says so and goes on unguarded.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from simpo.errors import RunDirError

log = logging.getLogger(__name__)

LOCK_FILE = ".simpo.lock"
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}


class RunDirInUseError(RunDirError):
    """Another live process owns the run directory: nothing of this command may write there."""


class RunDirLock:
    """A context manager holding the lock on ``run_dir`` (created if missing) from ``__enter__`` to ``__exit__``.

    Args:
        run_dir: the run directory (``hydra.run.dir``), or an output directory the run owns outside it.
        is_writer: this process writes the run directory (global rank 0); the others take no lock.
        key: for an output directory, the config key that names it (messages name ``key=<path>``).

    Raises (from ``__enter__``):
        RunDirInUseError: another process holds it; the message names its process id, host, start and command.
    """

    def __init__(self, run_dir: Path, is_writer: bool = True, key: str | None = None) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.is_writer = is_writer
        self.key = key
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> RunDirLock:
        if not self.is_writer:
            return self
        self._created = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while self._fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # never O_TRUNC: the holder's record stays readable
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                holder = _read_holder(fd) if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else None
                os.close(fd)
                if holder is not None and self.key is not None:
                    raise RunDirInUseError(
                        f"{self.key}={self.path.parent} is in use by {holder}: wait for that run to end, or give "
                        "another directory"
                    ) from None
                if holder is not None:
                    raise RunDirInUseError(
                        f"the run directory {self.path.parent} is in use by {holder}: wait for that run to end, or "
                        "pick another directory (hydra.run.dir=..., or hydra.sweep.dir in a sweep)"
                    ) from None
                if error.errno not in _UNSUPPORTED:
                    raise
                self.path.unlink(missing_ok=True)
                self._fd = None
                log.warning("the file system of %s does not support locks (%s): nothing stops a second run from "
                            "using the same directory at the same time", self.path.parent, error.strerror)  # fmt: skip
                return self
            if _same_file(fd, self.path):
                self._fd = fd
            else:  # the previous holder removed the file after we opened it: lock the one the path names now
                os.close(fd)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": " ".join(sys.argv)[:500]}  # fmt: skip
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps(record) + "\n").encode(), 0)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._fd is not None:
            if _same_file(self._fd, self.path):
                self.path.unlink()  # while still locked, so that no one else can have taken this file meanwhile
            os.close(self._fd)  # closing the only descriptor releases the lock
            self._fd = None
        if self._created:  # a command that wrote nothing leaves no directory behind either
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the open file ``fd``."""
    try:
        named = os.stat(path)
    except OSError:  # gone, or a parent replaced (by a file, by another directory)
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _read_holder(fd: int) -> str:
    """'process 1234 on host h (since ..., python train.py ...)' from the holder's record, or what can be said."""
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        record = {}
    if not record.get("pid"):
        return "another process (it has not written its record yet)"
    return (f"process {record['pid']} on host {record.get('host', '?')} (since {record.get('started', '?')}: "
            f"{record.get('command', '?')})")  # fmt: skip
