"""What a cached reference table depends on, as JSON-serialisable parts of its fingerprint: the reference weights
(files of a local directory by name, size and modification time; a hub id by name; a random init by architecture and
seed), the dtype and precision they are run in, the data (the tokenised splits' own fingerprints) and this code."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json")
CODE_FILES = ("keys.py", "kl_pairs.py", "pass_.py", "identity.py")


def weights_identity(name_or_path: str) -> dict[str, Any]:
    """A local directory: every weight/config file's name, size and mtime; otherwise the hub id itself."""
    path = Path(name_or_path)
    if not path.is_dir():
        return {"hub_id": name_or_path}
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    return {
        "dir": str(path.resolve()),
        "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files],
    }


def policy_identity(name_or_path: str | None, architecture: dict[str, Any] | None, seed: int) -> dict[str, Any]:
    """The initial policy's weights: pretrained files, or a random init (architecture and seed)."""
    if name_or_path is not None:
        return weights_identity(name_or_path)
    return {"random_init": architecture, "seed": seed}


def code_digest() -> str:
    """A hash of the code that computes and keys the table, so a change to it never reuses stale values."""
    digest = hashlib.sha256()
    for name in CODE_FILES:
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()[:16]


def table_fingerprint(parts: dict[str, Any]) -> str:
    """A short stable hash of ``parts`` (plus the code digest)."""
    text = json.dumps({**parts, "code": code_digest()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]
