"""Files in one place: one reader for every ``torch.save`` file, which never runs code from it, and one atomic writer.

Checkpoints are shared and downloaded, so a file is data, never code: ``torch.load`` runs with ``weights_only=True``
(tensors, numbers, strings, ``None``, lists, tuples and dicts; everything this project saves is made of those). Of a
sharded (FSDP) checkpoint, which ``torch.distributed.checkpoint`` unpickles without such limits, the ``.metadata`` is
read first with an unpickler that accepts only the format's own record types, and every non-tensor entry of the
shards as plain data. A file that holds anything else is refused before any of it is used; so is a truncated one,
with a different message.
"""

from __future__ import annotations

import ctypes
import errno
import importlib
import json
import os
import pickle
import re
import secrets
import shutil
import socket
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import IO, Any, BinaryIO

import torch

from simpo.errors import CheckpointError, NoSpaceError

SHARDED_METADATA = ".metadata"  # written by torch.distributed.checkpoint beside the shards
SHARDED_STATE = "meta.pt"  # Lightning's non-tensor state of a sharded checkpoint
ZIP_MAGIC = b"PK\x03\x04"  # every torch.save file since torch 1.6 is a zip archive

# Record types of a torch.distributed.checkpoint ``.metadata`` file (dataclasses and enums: data, no behaviour).
_SHARDED_MODULES = ("torch.distributed.checkpoint.metadata",)
_SHARDED_NAMES = {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.serialization", "_get_layout"),
    ("torch", "Size"),
    ("collections", "OrderedDict"),
    *((module, name) for module in ("pathlib", "pathlib._local") for name in ("PosixPath", "PurePosixPath")),
    *((module, name) for module in ("pathlib", "pathlib._local") for name in ("WindowsPath", "PureWindowsPath")),
}
CHECKPOINT_REMEDY = "Use a checkpoint written by this project's train.py"


class _ShardedMetadataUnpickler(pickle.Unpickler):
    """Unpickles a ``.metadata`` file, resolving only the names of ``_SHARDED_NAMES``, the record classes of
    ``torch.distributed.checkpoint.metadata`` and torch's dtypes, layouts and memory formats."""

    def find_class(self, module: str, name: str) -> Any:
        if module in _SHARDED_MODULES:
            found = getattr(importlib.import_module(module), name, None)
            if isinstance(found, type):
                return found
        elif (module, name) in _SHARDED_NAMES:
            return super().find_class(module, name)
        elif module == "torch":
            found = getattr(torch, name, None)
            if isinstance(found, (torch.dtype, torch.layout, torch.memory_format)):
                return found
        raise pickle.UnpicklingError(f"unsupported global {module}.{name}")


def _where(key: str, path: Path) -> str:
    """``key=path`` for a file a config key names, else the path alone (a cache file)."""
    return f"{key}={path}" if key else str(path)


def _objects_refused(path: Path, key: str, detail: str, remedy: str = CHECKPOINT_REMEDY) -> CheckpointError:
    return CheckpointError(
        f"{_where(key, path)}: {path.name} holds Python objects that are never loaded ({detail}): only tensors, "
        "numbers, strings, lists, tuples and dicts are read from a file, since loading anything else would run code "
        f"from it. {remedy}"
    )


def _truncated(path: Path, key: str, detail: str) -> CheckpointError:
    return CheckpointError(
        f"{_where(key, path)}: {path.name} is not a complete checkpoint (truncated: {detail}); it was probably cut "
        "short while being saved or copied"
    )


def _check_zip_header(path: Path, key: str) -> None:
    """Refuse an empty file (truncated) and one that is no zip archive (not a ``torch.save`` file of torch >= 1.6)."""
    with path.open("rb") as handle:
        head = handle.read(len(ZIP_MAGIC))
    if not ZIP_MAGIC.startswith(head):
        raise CheckpointError(f"{_where(key, path)}: {path.name} is not a checkpoint (not written by torch.save)")
    if len(head) < len(ZIP_MAGIC):
        raise _truncated(path, key, f"{len(head)} bytes")


def _refused_global(error: pickle.UnpicklingError) -> str:
    """The name torch's weights-only unpickler refused, from its message."""
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    return f"it refers to {found.group(1)}" if found else str(error).strip().splitlines()[-1]


def _check_sharded_metadata(directory: Path, key: str) -> Any:
    """Unpickle a sharded checkpoint's ``.metadata`` with ``_ShardedMetadataUnpickler``; returns it.

    Raises:
        CheckpointError: the file is missing, truncated, or refers to anything but the checkpoint's record types.
    """
    path = directory / SHARDED_METADATA
    if not path.is_file():
        raise CheckpointError(f"{_where(key, directory)}: a sharded checkpoint without its {SHARDED_METADATA} file")
    handle: BinaryIO
    with path.open("rb") as handle:
        try:
            return _ShardedMetadataUnpickler(handle).load()
        except pickle.UnpicklingError as error:
            if str(error).startswith("unsupported global"):
                raise _objects_refused(path, key, f"it refers to {str(error).split()[-1]}") from None
            raise CheckpointError(f"{_where(key, directory)}: {path.name} is truncated ({error})") from None
        except (EOFError, ValueError, AttributeError, TypeError, ImportError) as error:
            raise CheckpointError(
                f"{_where(key, directory)}: {path.name} is truncated ({type(error).__name__}: {error})"
            ) from None


def _check_sharded_entries(directory: Path, metadata: Any, key: str) -> None:
    """Read every non-tensor entry of a sharded checkpoint's shards (the optimizer's settings, ...) as plain data:
    ``torch.distributed.checkpoint`` itself unpickles them with ``weights_only=False``, which would run their code.

    Raises:
        CheckpointError: an entry holds more than plain data, is cut short, lies outside ``directory`` or is stored
            transformed (compressed: it cannot be checked).
    """
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    for index, info in metadata.storage_data.items():
        if not isinstance(metadata.state_dict_metadata.get(index.fqn), BytesStorageMetadata):
            continue
        shard = (directory / info.relative_path).resolve()
        if not shard.is_relative_to(directory.resolve()) or getattr(info, "transform_descriptors", None):
            raise CheckpointError(f"{_where(key, directory)}: entry {index.fqn} is stored where it cannot be checked")
        if not shard.is_file():
            raise CheckpointError(f"{_where(key, directory)}: its shard {info.relative_path} is missing (a cut copy?)")
        with shard.open("rb") as handle:
            handle.seek(info.offset)
            data = handle.read(info.length)
        if len(data) != info.length:
            raise _truncated(shard, key, f"entry {index.fqn} ends after {len(data)} of {info.length} bytes")
        load_plain(BytesIO(data), shard, key)


def load_plain(
    source: Path | BinaryIO, path: Path, key: str, mmap: bool = False, remedy: str = CHECKPOINT_REMEDY
) -> Any:
    """``torch.load`` of ``source`` (the file ``path``, or a stream read from it) with ``weights_only=True``: this
    project's one ``torch.load``.

    Raises:
        CheckpointError: more than plain data (never loaded), truncated, or unreadable.
    """
    try:
        return torch.load(source, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        if "weights only load failed" in str(error).lower():
            raise _objects_refused(path, key, _refused_global(error), remedy) from None
        raise _truncated(path, key, str(error)) from None
    except PermissionError:
        raise CheckpointError(f"{_where(key, path)}: {path.name} cannot be read (permission denied)") from None
    except (RuntimeError, EOFError, KeyError, IndexError, ValueError, OSError, zipfile.BadZipFile) as error:
        raise _truncated(path, key, str(error).split(". ")[0] or type(error).__name__) from None


def read_torch_file(
    path: str | Path, key: str = "ckpt_path", mmap: bool = False, remedy: str = CHECKPOINT_REMEDY
) -> Any:
    """The contents of a ``torch.save`` file, or of a sharded checkpoint directory's ``meta.pt``.

    Args:
        path: a file, or a sharded checkpoint directory (its ``.metadata`` is checked too).
        key: the config key that named ``path``, for the messages (empty: a file no key names, e.g. a cache).
        mmap: memory-map the tensors instead of reading them (a file only).
        remedy: what to do about a file that holds more than plain data (the end of the message).

    Raises:
        CheckpointError: ``path`` does not exist, is truncated, is not a torch file, or holds Python objects other
            than plain data (never loaded).
    """
    path = Path(path)
    if path.is_dir():
        if not (path / SHARDED_STATE).is_file():
            raise CheckpointError(f"{_where(key, path)}: a directory but no sharded checkpoint (no {SHARDED_STATE})")
        _check_sharded_entries(path, _check_sharded_metadata(path, key), key)
        return read_torch_file(path / SHARDED_STATE, key)
    if not path.is_file():
        raise CheckpointError(f"{_where(key, path)}: no such file (relative to {Path.cwd()})")
    _check_zip_header(path, key)
    return load_plain(path, path, key, mmap, remedy)


# ---------------------------------------------------------------------------------------------------------------------
# Writing: one atomic writer for files and directories.
#
# A file or directory is written under a temporary name beside its target (same file system), synced (the file, or
# every file of the directory), renamed onto the target, and the parent directory is synced, so that after a crash the
# target is the previous complete version or the new complete one. A directory replaces an existing one by an atomic
# exchange (Linux's renameat2(RENAME_EXCHANGE)); where the file system lacks it, the old one is moved aside first, and
# the next writer of the same target undoes or finishes such an interrupted swap. Temporaries carry the host and the
# process id (``.<name>.tmp-<host>-<pid>-<random>``), so the next writer removes those that a killed process left.
# Files get the usual permissions under the umask.
# ---------------------------------------------------------------------------------------------------------------------

_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<host>[^-]+)-(?P<pid>\d+)-[0-9a-f]+$")
_RENAME_EXCHANGE = 2  # <linux/fs.h>
_AT_FDCWD = -100


def _host() -> str:
    return socket.gethostname().replace("-", "_") or "host"


def _sibling(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{_host()}-{os.getpid()}-{secrets.token_hex(4)}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def fsync_directory(directory: Path) -> None:
    """Make the entries of ``directory`` (a rename into it) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for directory, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_directory(Path(directory))


def remove_stale_temporaries(directory: Path, name: str | None = None) -> None:
    """Clean up after writers of this host that were killed: remove their temporaries, and undo (the target is gone:
    the previous version is moved back) or finish (the new version is in place: the old one is removed) a directory
    swap that was interrupted. Only the entries of ``name`` when given, else of every target in ``directory``;
    temporaries of live processes and of other hosts are left alone."""
    if not directory.is_dir():
        return
    prefix = f".{name}." if name is not None else "."
    changed = False
    for entry in directory.iterdir():
        found = _TEMPORARY.match(entry.name) if entry.name.startswith(prefix) else None
        if found is None or (name is not None and found["name"] != name):
            continue
        if found["host"] != _host() or _alive(int(found["pid"])):
            continue
        target = directory / found["name"]
        if found["kind"] == "old" and not target.exists() and not target.is_symlink():
            os.rename(entry, target)  # undo: the previous version is the target again
        else:
            _remove(entry)
        changed = True
    if changed:  # every write calls this: the directory is synced only when an entry went
        fsync_directory(directory)


def target_name(name: str) -> str:
    """The name of the target a temporary of this module stands for (``.hf.tmp-<host>-<pid>-<hex>`` -> ``hf``), or
    ``name`` itself for any other entry."""
    found = _TEMPORARY.match(name)
    return found["name"] if found else name


def temporary_for(path: Path, directory: bool = False) -> Path:
    """A new temporary beside ``path`` (an empty directory when ``directory``), after removing stale ones."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    tmp = _sibling(path, "tmp")
    if directory:
        os.mkdir(tmp, 0o777)
    return tmp


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (renameat2 with RENAME_EXCHANGE); False where the system or file system lacks it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"renameat2({a}, {b}, RENAME_EXCHANGE): {os.strerror(code)}")


def _create(tmp: Path, path: Path) -> bool:
    """Rename ``tmp`` to ``path`` unless ``path`` appeared meanwhile (then ``tmp`` is dropped): False."""
    try:
        if tmp.is_dir():
            os.rename(tmp, path)  # fails onto a non-empty directory
        else:
            os.link(tmp, path)  # fails onto any existing file, unlike rename
            tmp.unlink()
    except OSError:
        if not path.exists():
            raise
        _remove(tmp)
        return False
    fsync_directory(path.parent)
    return True


def commit(tmp: Path, path: Path, replace: bool = True) -> bool:
    """Move the complete temporary ``tmp`` (a file or a directory from ``temporary_for``) onto ``path``.

    Args:
        replace: replace an existing ``path``; False keeps it (another process finished the same work first) and
            drops ``tmp``.

    Returns:
        True when ``tmp`` is now ``path``.
    """
    if tmp.is_dir():
        _fsync_tree(tmp)
    else:
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
    exists = path.exists() or path.is_symlink()
    if not replace:
        if exists:
            _remove(tmp)
            return False
        return _create(tmp, path)
    if not exists or not (tmp.is_dir() or path.is_dir()):
        os.replace(tmp, path)
    elif _exchange(tmp, path):  # tmp now holds the previous version
        fsync_directory(path.parent)
        _remove(tmp)
    else:
        aside = _sibling(path, "old")
        os.rename(path, aside)
        os.rename(tmp, path)
        fsync_directory(path.parent)
        _remove(aside)
    fsync_directory(path.parent)
    return True


@contextmanager
def atomic_file(path: str | Path, mode: str = "w", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces ``path`` (synced), on an error
    it is removed and ``path`` keeps its previous contents.

    Args:
        mode: ``"w"`` (text) or ``"wb"`` (bytes).
        open_kwargs: passed on to ``open`` (``newline``, ``encoding``).
    """
    path = Path(path)
    tmp = temporary_for(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)  # the umask applies
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
        commit(tmp, path)
    except OSError as error:
        raise _no_space(error, path) from error
    finally:
        _remove(tmp)


NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _no_space(error: OSError, path: Path) -> OSError:
    """``NoSpaceError`` naming ``path`` for a write that found no room (full disk, quota, size limit); else ``error``
    itself."""
    if error.errno not in NO_SPACE or isinstance(error, NoSpaceError):
        return error
    return NoSpaceError(
        error.errno, f"no room to write {path} ({error.strerror}): free space on its file system or write elsewhere; "
        "the previous version of the file is kept"
    )


class _RecordingWriter:
    """A binary file wrapper that keeps the ``OSError`` of a failed write: ``torch.save`` replaces it by a
    ``RuntimeError`` that does not say why."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle, self.error = handle, None

    def write(self, data: Any) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.handle.flush()


@contextmanager
def atomic_directory(path: str | Path, replace: bool = True) -> Iterator[Path]:
    """A temporary directory beside ``path`` to fill; on a clean exit it becomes ``path`` (``commit``), on an error it
    is removed and ``path`` stays as it was."""
    path = Path(path)
    tmp = temporary_for(path, directory=True)
    try:
        yield tmp
        commit(tmp, path, replace)
    except OSError as error:
        raise _no_space(error, path) from error
    finally:
        _remove(tmp)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_file(path) as handle:
        handle.write(text)


def write_json(path: str | Path, value: Any, indent: int | None = 2, **dump_kwargs: Any) -> None:
    """Write ``value`` as JSON to ``path`` atomically."""
    with atomic_file(path) as handle:
        json.dump(value, handle, indent=indent, **dump_kwargs)


def save_torch(value: Any, path: str | Path) -> None:
    """``torch.save`` ``value`` to ``path`` atomically."""
    with atomic_file(path, "wb") as handle:
        writer = _RecordingWriter(handle)
        try:
            torch.save(value, writer)
        except RuntimeError as error:  # torch's message for a failed write; the OSError behind it says why
            if writer.error is not None:
                raise writer.error from error
            raise
