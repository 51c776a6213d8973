"""Files in one place: one reader for every ``torch.save`` file, which never runs code from it.

Checkpoints are shared and downloaded, so a file is data, never code: ``torch.load`` runs with ``weights_only=True``
(tensors, numbers, strings, ``None``, lists, tuples and dicts; everything this project saves is made of those), and a
sharded (FSDP) checkpoint's ``.metadata``, which ``torch.distributed.checkpoint`` reads with a plain unpickler, is
read first with one that accepts only the checkpoint format's own record types. A file that holds anything else is
refused before any of it is used; so is a truncated one, with a different message.
"""

from __future__ import annotations

import importlib
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import torch

from simpo.errors import CheckpointError

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
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PureWindowsPath"),
}


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


def _objects_refused(path: Path, key: str, detail: str) -> CheckpointError:
    return CheckpointError(
        f"{key}={path}: {path.name} holds Python objects that are never loaded ({detail}): only tensors, numbers, "
        "strings, lists, tuples and dicts are read from a file, since loading anything else would run code from it. "
        "Use a checkpoint written by this project's train.py"
    )


def _truncated(path: Path, key: str, detail: str) -> CheckpointError:
    return CheckpointError(
        f"{key}={path}: {path.name} is not a complete checkpoint (truncated: {detail}); it was probably cut short "
        "while being saved or copied"
    )


def _check_zip_header(path: Path, key: str) -> None:
    """Refuse an empty file (truncated) and one that is no zip archive (not a ``torch.save`` file of torch >= 1.6)."""
    with path.open("rb") as handle:
        head = handle.read(len(ZIP_MAGIC))
    if not head:
        raise _truncated(path, key, "the file is empty")
    if head != ZIP_MAGIC:
        raise CheckpointError(f"{key}={path}: {path.name} is not a checkpoint (not a file written by torch.save)")


def _refused_global(error: pickle.UnpicklingError) -> str:
    """The name torch's weights-only unpickler refused, from its message."""
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    return f"it refers to {found.group(1)}" if found else str(error).strip().splitlines()[-1]


def _check_sharded_metadata(directory: Path, key: str) -> None:
    """Unpickle a sharded checkpoint's ``.metadata`` with ``_ShardedMetadataUnpickler``.

    Raises:
        CheckpointError: the file is missing, truncated, or refers to anything but the checkpoint's record types.
    """
    path = directory / SHARDED_METADATA
    if not path.is_file():
        raise CheckpointError(f"{key}={directory}: a sharded checkpoint directory without its {SHARDED_METADATA} file")
    handle: BinaryIO
    with path.open("rb") as handle:
        try:
            _ShardedMetadataUnpickler(handle).load()
        except pickle.UnpicklingError as error:
            if str(error).startswith("unsupported global"):
                raise _objects_refused(path, key, f"it refers to {str(error).split()[-1]}") from None
            raise CheckpointError(f"{key}={directory}: {path.name} is not complete (truncated: {error})") from None
        except (EOFError, ValueError, AttributeError, TypeError) as error:
            raise CheckpointError(
                f"{key}={directory}: {path.name} is not complete (truncated: {type(error).__name__}: {error})"
            ) from None


def read_torch_file(path: str | Path, key: str = "ckpt_path", mmap: bool = False) -> Any:
    """The contents of a ``torch.save`` file, or of a sharded checkpoint directory's ``meta.pt``.

    Args:
        path: a file, or a sharded checkpoint directory (its ``.metadata`` is checked too).
        key: the config key that named ``path``, for the messages.
        mmap: memory-map the tensors instead of reading them (a file only).

    Raises:
        CheckpointError: ``path`` does not exist, is truncated, is not a torch file, or holds Python objects other
            than plain data (never loaded).
    """
    path = Path(path)
    if path.is_dir():
        if not (path / SHARDED_STATE).is_file():
            raise CheckpointError(f"{key}={path}: a directory that is not a sharded checkpoint (no {SHARDED_STATE})")
        _check_sharded_metadata(path, key)
        return read_torch_file(path / SHARDED_STATE, key)
    if not path.is_file():
        raise CheckpointError(f"{key}={path}: no such file (relative to {Path.cwd()})")
    _check_zip_header(path, key)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        if "weights only load failed" in str(error).lower():
            raise _objects_refused(path, key, _refused_global(error)) from None
        raise _truncated(path, key, str(error)) from None
    except PermissionError:
        raise
    except (RuntimeError, EOFError, KeyError, IndexError, ValueError, OSError, zipfile.BadZipFile) as error:
        raise _truncated(path, key, str(error).split(". ")[0] or type(error).__name__) from None
