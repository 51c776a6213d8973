"""``simpo.io``'s atomic writer: whole files and directories or the previous version, never half of one; no
temporary outlives its process; the usual permissions."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from simpo import io
from simpo.io import (
    atomic_directory,
    atomic_file,
    read_torch_file,
    remove_stale_temporaries,
    save_torch,
    write_json,
    write_text,  # fmt: skip
)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_are_whole_with_the_usual_permissions(tmp_path, umask):
    previous = os.umask(umask)
    try:
        write_text(tmp_path / "a.txt", "one")
        write_json(tmp_path / "b.json", {"x": [1, 2]})
        save_torch({"w": torch.arange(3)}, tmp_path / "c.pt")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.txt").read_text() == "one" and json.loads((tmp_path / "b.json").read_text()) == {"x": [1, 2]}
    assert torch.equal(read_torch_file(tmp_path / "c.pt")["w"], torch.arange(3))
    for name in ("a.txt", "b.json", "c.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask
    assert leftovers(tmp_path) == []


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_file(tmp_path / "a.txt") as handle:
        handle.write("half of the new")
        raise RuntimeError("disk full")
    assert (tmp_path / "a.txt").read_text() == "old" and leftovers(tmp_path) == []


def test_renameat2_exchanges_two_directories(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "from_a").touch()
    if not io._exchange(tmp_path / "a", tmp_path / "b"):
        pytest.skip("this file system has no renameat2(RENAME_EXCHANGE)")
    assert (tmp_path / "b" / "from_a").exists() and not (tmp_path / "a" / "from_a").exists()


@pytest.mark.parametrize("exchange", [True, False])
def test_a_directory_replaces_the_previous_one_whole(tmp_path, monkeypatch, exchange):
    if not exchange:  # a file system without renameat2(RENAME_EXCHANGE): moved aside, then replaced
        monkeypatch.setattr(io, "_exchange", lambda a, b: False)
    target = tmp_path / "hf"
    with atomic_directory(target) as tmp:
        (tmp / "old.txt").write_text("old")
    with atomic_directory(target) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "new.txt").write_text("new")
    assert sorted(p.name for p in target.rglob("*")) == ["new.txt", "sub"] and leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="bad weights"), atomic_directory(target) as tmp:
        (tmp / "partial.txt").write_text("x")
        raise ValueError("bad weights")
    assert (target / "sub" / "new.txt").read_text() == "new" and leftovers(tmp_path) == []


def test_a_file_and_a_directory_replace_each_other(tmp_path):
    target = tmp_path / "last.ckpt"  # a sharded checkpoint (directory) after a full one (file), and back
    write_text(target, "file")
    with atomic_directory(target) as tmp:
        (tmp / "meta.pt").write_text("dir")
    assert (target / "meta.pt").read_text() == "dir"
    write_text(target, "file again")
    assert target.read_text() == "file again" and leftovers(tmp_path) == []


def test_without_replace_the_first_finished_copy_is_kept(tmp_path):
    with atomic_directory(tmp_path / "cache", replace=False) as tmp:
        (tmp / "report.json").write_text("first")
    with atomic_directory(tmp_path / "cache", replace=False) as tmp:
        (tmp / "report.json").write_text("second")
    assert (tmp_path / "cache" / "report.json").read_text() == "first" and leftovers(tmp_path) == []


def test_the_next_writer_cleans_up_after_a_killed_one(tmp_path):
    host, dead = io._host(), dead_pid()
    (tmp_path / "hf").mkdir()  # interrupted swap, new version in place: the old one is removed
    (tmp_path / f".hf.old-{host}-{dead}-00aa").mkdir()
    (tmp_path / f".last.ckpt.old-{host}-{dead}-00bb").write_text("previous")  # target gone: moved back
    (tmp_path / f".status.json.tmp-{host}-{dead}-00cc").write_text("{")  # a killed write
    kept = [f".status.json.tmp-{host}-{os.getpid()}-00dd", f".status.json.tmp-otherhost-{dead}-00ee"]
    for name in kept:  # a live writer's, and another host's (its process cannot be checked from here)
        (tmp_path / name).write_text("{")
    remove_stale_temporaries(tmp_path)
    assert (tmp_path / "last.ckpt").read_text() == "previous"
    assert leftovers(tmp_path) == sorted(kept)


def test_a_write_removes_only_its_own_targets_stale_temporaries(tmp_path):
    dead = dead_pid()
    stale = [f".a.txt.tmp-{io._host()}-{dead}-0011", f".b.txt.tmp-{io._host()}-{dead}-0022"]
    for name in stale:
        (tmp_path / name).write_text("x")
    write_text(tmp_path / "a.txt", "new")
    assert leftovers(tmp_path) == [stale[1]]
