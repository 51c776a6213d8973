"""One owner per run directory: the lock held by a real second process, released by the kernel when it is killed."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from simpo.runs.lock import LOCK_FILE, RunDirInUseError, RunDirLock

ROOT = Path(__file__).resolve().parents[2]


def hold(run_dir: Path) -> subprocess.Popen:
    """Another process that takes the lock, says so, and sleeps holding it."""
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from simpo.runs.lock import RunDirLock
        with RunDirLock(Path({str(run_dir)!r})):
            print("held", flush=True)
            time.sleep(600)
    """)
    holder = subprocess.Popen([sys.executable, "-c", script, "--the-holder"], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_owner_is_refused_with_the_holders_pid_and_host_until_the_holder_dies(tmp_path):
    holder = hold(tmp_path)
    try:
        expected = rf"in use by process {holder.pid} on host {socket.gethostname()} \(since .*--the-holder\)"
        with pytest.raises(RunDirInUseError, match=expected), RunDirLock(tmp_path):
            pytest.fail("two owners at once")
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == holder.pid  # the refusal changed nothing
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert (tmp_path / LOCK_FILE).exists()  # a killed holder leaves its file, but the kernel released the lock
    with RunDirLock(tmp_path):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_FILE).exists()  # an owner that ends leaves no trace


def test_only_the_writer_takes_the_lock(tmp_path):
    with RunDirLock(tmp_path / "run", is_writer=False):
        assert not (tmp_path / "run").exists()
    with RunDirLock(tmp_path / "run"), RunDirLock(tmp_path / "run", is_writer=False):
        pass  # rank 1 beside rank 0


def test_a_file_system_without_locks_is_said_and_the_run_goes_on(tmp_path, monkeypatch, caplog):
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)  # what a Lustre mount without -o flock answers
    with caplog.at_level(logging.WARNING), RunDirLock(tmp_path):
        pass
    assert "does not support locks" in caplog.text and "nothing stops a second run" in caplog.text
    assert not (tmp_path / LOCK_FILE).exists()
