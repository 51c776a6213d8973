"""Stopping ``sample.py`` on SIGINT (Ctrl-C) or SIGTERM (a scheduler's preemption) without a half-written file.

Inside ``GracefulStop`` the first SIGINT or SIGTERM raises ``SamplingInterrupted`` in the main thread at once: the
shard in flight, whose rows exist only in memory, is dropped, and a rerun of the same command redoes it from its own
seeds (the same rows). A signal that arrives while a file is being written and renamed (``deferred``, used by every
atomic write of the sampling package) waits until the rename is done, so a stop never leaves a temporary file
behind either. A second signal while the process winds down acts at once, with that signal's default behaviour.
Nothing can catch SIGKILL: its temporaries are removed by the next run (``ShardStore.remove_stale_temporaries``).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SamplingInterrupted(SystemExit):
    """A stop signal ended the run; a ``SystemExit`` whose code is ``128 + signum`` (130 SIGINT, 143 SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + int(signum))
        self.signal = signal.Signals(signum)

    def __str__(self) -> str:
        return f"{self.signal.name} (exit status {self.code})"


class _State:
    """The process-wide state of the active ``GracefulStop``: whether one is installed, how deep the deferred
    sections are nested and the signal that arrived inside one."""

    active = False
    depth = 0
    pending: int | None = None


def _default(signum: int) -> object:
    return signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL


def _handle(signum: int, frame: FrameType | None) -> None:
    for other in SIGNALS:  # a second signal stops at once
        signal.signal(other, _default(other))  # type: ignore[arg-type]
    if _State.depth > 0:
        _State.pending = signum
        return
    raise SamplingInterrupted(signum)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold a stop signal until the block (a file write and its rename) is done, then raise it."""
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
    if _State.depth == 0 and _State.pending is not None:
        signum, _State.pending = _State.pending, None
        raise SamplingInterrupted(signum)


class GracefulStop:
    """Within the block, SIGINT and SIGTERM raise ``SamplingInterrupted`` (see the module's docstring); the previous
    handlers are restored on leaving. Outside the main thread (where Python cannot set handlers) it does nothing."""

    def __init__(self) -> None:
        self._previous: dict[int, object] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread() and not _State.active:
            self._previous = {signum: signal.signal(signum, _handle) for signum in SIGNALS}
            _State.active, _State.pending = True, None
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        if self._previous:
            _State.active, _State.pending = False, None
        self._previous = {}
