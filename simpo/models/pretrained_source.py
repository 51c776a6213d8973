"""Where pretrained weights or a tokenizer come from: a local directory or a hub id, checked before loading so that
a typo is named as such rather than reported by the hub client as a malformed repository id."""

from __future__ import annotations

import re
from pathlib import Path

from simpo.errors import MissingFileError

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def check_pretrained_source(name_or_path: str, key: str, *, bundled: tuple[str, ...] = ()) -> str:
    """Return ``name_or_path`` if it is an existing local directory, a bundled name or a well-formed hub id.

    Args:
        name_or_path: what the user set.
        key: the config key it came from (``model.name_or_path``, ``model.tokenizer``, ...), named in errors.
        bundled: names that are resolved without the hub (bundled tokenizers).

    Raises:
        FileNotFoundError: a path (absolute, relative with ``./``, ``~``, more than one ``/``) that does not
            exist, or an existing file where a directory is needed.
        ValueError: a value that is neither a path nor a hub id of the form ``name`` or ``org/name``.
    """
    text = str(name_or_path)
    if text in bundled:
        return text
    path = Path(text).expanduser()
    if path.is_dir():
        return text
    if path.exists():
        raise MissingFileError(f"{key}={text} is a file; it must be a model directory (with config.json) or a hub id")
    looks_local = text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text
    if looks_local or not HUB_ID.match(text):
        hint = f" (relative to the working directory {Path.cwd()})" if not path.is_absolute() else ""
        raise MissingFileError(f"{key}={text}: no such directory{hint}, and it is not a hub id of the form 'org/name'")
    return text


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json", "tekken.json")


def check_tokenizer_files(name_or_path: str, key: str) -> None:
    """A local directory given as a tokenizer source must hold tokenizer files.

    Raises:
        FileNotFoundError: names ``key`` and says to set ``model.tokenizer`` (a bundled name or another directory).
    """
    path = Path(str(name_or_path)).expanduser()
    if path.is_dir() and not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise MissingFileError(
            f"{key}={name_or_path} holds no tokenizer files ({', '.join(TOKENIZER_FILES)}): set model.tokenizer to the "
            "model's tokenizer (a directory, a hub id, or a bundled name: llama3, mistral-v1, mistral-v3)"
        )
