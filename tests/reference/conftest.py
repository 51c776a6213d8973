"""A small preference file (the bundled pairs' first rows) so a reference pass over it takes seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT


def write_pairs(path: Path, rows: int, skip: int = 0) -> Path:
    """The bundled training split's rows ``skip .. skip + rows`` as a single .jsonl file."""
    lines = (ROOT / "data" / "tiny_prefs" / "train_prefs.jsonl").read_text().splitlines()[skip : skip + rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def small_pairs(tmp_path_factory) -> Path:
    """32 pairs: 24 trained on, 8 validated on (data.val_size=8)."""
    return write_pairs(tmp_path_factory.mktemp("pairs") / "pairs.jsonl", 32)
