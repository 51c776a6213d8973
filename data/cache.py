"""The tokenised-data cache: ``<cache root>/tokenized/<fingerprint>/`` holds a ``save_to_disk`` copy and its report.

The fingerprint covers everything the token ids depend on: the rows read (their ``datasets`` fingerprint), the
tokenizer (its serialised vocabulary, normaliser and special tokens), the chat template, the truncation and BOS
settings, the layout and column mapping, and the source of the tokenisation code itself. A directory is written
to a temporary sibling and renamed into place, so a crash never leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import datasets
from transformers import PreTrainedTokenizerBase

from data.progress import no_progress_bars
from data.tokenizers import cache_root
from simpo.io import atomic_directory

CODE_FILES = ("file_rows.py", "pair_encoding.py", "templating.py", "layouts.py", "bos.py", "report.py", "cache.py")
REPORT_FILE = "report.json"


def tokenizer_digest(tokenizer: PreTrainedTokenizerBase) -> str:
    """A hash of what decides the tokenizer's ids: its backend (vocabulary, rules, added tokens) and specials."""
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    digest.update(backend.to_str().encode() if backend is not None else json.dumps(tokenizer.get_vocab()).encode())
    digest.update(json.dumps([type(tokenizer).__name__, tokenizer.bos_token, tokenizer.eos_token]).encode())
    return digest.hexdigest()


def code_digest() -> str:
    """A hash of the tokenisation code, so a change to it never reuses stale ids."""
    digest = hashlib.sha256()
    for name in CODE_FILES:
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()


def fingerprint(parts: dict[str, Any]) -> str:
    """A short stable hash of ``parts`` (JSON-serialisable settings and digests)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def entry_dir(key: str) -> Path:
    """The cache directory of fingerprint ``key``."""
    return cache_root() / "tokenized" / key


def load(key: str) -> tuple[datasets.Dataset, dict[str, Any]] | None:
    """The cached (data set, split report) of ``key``, or ``None`` when there is no complete entry."""
    directory = entry_dir(key)
    if not (directory / REPORT_FILE).is_file():
        return None
    with no_progress_bars():
        dataset = datasets.load_from_disk(str(directory / "data"))
    return dataset, json.loads((directory / REPORT_FILE).read_text())


def save(key: str, dataset: datasets.Dataset, report: dict[str, Any]) -> None:
    """Store (data set, split report) under ``key`` atomically; an entry another process wrote first is kept."""
    with atomic_directory(entry_dir(key), replace=False) as tmp:  # another process finished first: keep theirs
        with no_progress_bars():
            dataset.save_to_disk(str(tmp / "data"))
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2))
