"""What a cached reference table depends on, as JSON-serialisable parts of its fingerprint: the reference weights
(each weight/config file of a local directory by the digest of its contents; a hub id by name; a random init by
architecture and seed), the dtype and precision they are run in, the data (the tokenised splits' own fingerprints) and
the code that scores and keys the pairs (``CODE_FILES``: the scorer and this package's pass).

A file's digest is remembered under its path, size, modification and change times and inode (``DIGEST_MEMO`` under
the cache root), so a large model is read once, not on every start; any write to the file changes its change time
(which ``touch`` cannot set back), so weights replaced in place, even with the same size and modification time, are
read again and key a new table.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from simpo.io import write_json

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json")
# under simpo/: the code that scores the pairs and keys the table
CODE_FILES = ("reference/keys.py", "reference/kl_pairs.py", "reference/pass_.py", "reference/identity.py", "scoring.py")


def file_digest(path: Path, memo_dir: Path | None) -> str:
    """The sha256 of ``path``'s contents, remembered in ``memo_dir`` under (path, size, mtime_ns, ctime_ns, inode)."""
    stat = path.stat()
    key = [str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
    memo = memo_dir / f"{hashlib.sha256(str(key[0]).encode()).hexdigest()[:32]}.json" if memo_dir else None
    if memo is not None and memo.is_file():
        try:
            known = json.loads(memo.read_text())
            if known.get("key") == key:
                return str(known["sha256"])
        except (OSError, ValueError, KeyError):
            pass  # an unreadable memo is only a lost shortcut
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 24):
            digest.update(chunk)
    if memo is not None:
        os.makedirs(memo.parent, exist_ok=True)
        write_json(memo, {"key": key, "sha256": digest.hexdigest()})
    return digest.hexdigest()


def weights_identity(name_or_path: str, memo_dir: Path | None = None) -> dict[str, Any]:
    """A local directory: every weight/config file's name and content digest; otherwise the hub id itself."""
    path = Path(name_or_path)
    if not path.is_dir():
        return {"hub_id": name_or_path}
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    return {"dir": str(path.resolve()), "files": [[p.name, file_digest(p, memo_dir)] for p in files]}


def policy_identity(
    name_or_path: str | None, architecture: dict[str, Any] | None, seed: int, memo_dir: Path | None = None
) -> dict[str, Any]:
    """The initial policy's weights: pretrained files (by content), or a random init (architecture and seed)."""
    if name_or_path is not None:
        return weights_identity(name_or_path, memo_dir)
    return {"random_init": architecture, "seed": seed}


def code_digest() -> str:
    """A hash of the code that computes and keys the table, so a change to it never reuses stale values."""
    digest = hashlib.sha256()
    for name in CODE_FILES:
        digest.update((Path(__file__).parents[1] / name).read_bytes())
    return digest.hexdigest()[:16]


def table_fingerprint(parts: dict[str, Any]) -> str:
    """A short stable hash of ``parts`` (plus the code digest)."""
    text = json.dumps({**parts, "code": code_digest()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]
