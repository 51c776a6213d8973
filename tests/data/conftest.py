"""Fixtures of the data tests: both offline tokenizers, rows of each layout, a data set directory writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data.tokenizers import load_tokenizer


@pytest.fixture(scope="session")
def mistral_tokenizer():
    """The bundled Mistral-7B (v1 vocabulary) tokenizer with the mistral chat template."""
    return load_tokenizer("mistral-v1")


@pytest.fixture(scope="session")
def mistral_v3_tokenizer():
    """The bundled Mistral Instruct-v0.3 (v3 vocabulary) tokenizer."""
    return load_tokenizer("mistral-v3")


@pytest.fixture(params=["llama3", "mistral-v1"])
def tokenizer(request, llama3_tokenizer, mistral_tokenizer):
    """Each offline tokenizer in turn (a test using it runs for Llama 3 and for Mistral)."""
    return llama3_tokenizer if request.param == "llama3" else mistral_tokenizer


def uf_row(prompt: str = "What is a cat?", chosen: str = "A small pet.", rejected: str = "No.") -> dict:
    """One UltraFeedback-binarized row."""
    user = {"role": "user", "content": prompt}
    return {
        "prompt": prompt,
        "chosen": [user, {"role": "assistant", "content": chosen}],
        "rejected": [user, {"role": "assistant", "content": rejected}],
    }


def write_split(directory: Path, split: str, rows: list[dict]) -> Path:
    """Write ``rows`` as ``<directory>/<split>.jsonl``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{split}.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch, llama3_tokenizer, mistral_tokenizer):
    """A fresh tokenised-data cache (tokenizers already built stay where they are)."""
    monkeypatch.setenv("SIMPO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
