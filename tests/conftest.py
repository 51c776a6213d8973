"""Shared fixtures: the bundled Llama 3 tokenizer and a composed tiny training config."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import train  # noqa: F401  (registers the ${project_root:} resolver)
from data.tokenizers import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]

# A training run small enough for a unit test: 6 steps of 4 pairs, validation on 16 pairs.
TINY_OVERRIDES = [
    "data.batch_size=4",
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.limit_val_batches=4",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks.model_checkpoint.every_n_train_steps=3",
    "callbacks.model_checkpoint.save_top_k=-1",
]


@pytest.fixture(scope="session")
def llama3_tokenizer():
    """The bundled Llama 3 tokenizer (built from llama-models once, then cached)."""
    return load_tokenizer("llama3")


def compose_train(run_dir: Path, overrides: list[str] = ()) -> DictConfig:
    """The real ``conf/train.yaml``, composed with ``run_dir`` and ``overrides`` (no Hydra run needed)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"run_dir={run_dir}", *overrides])


def padded_batch(input_ids, attention_mask, labels) -> dict:
    """A padded-layout batch (as ``PreferenceCollator`` makes) from (2P, T) ids, mask and -100-masked labels."""
    from simpo.core.logprobs import labelled_positions

    rows, positions, targets = labelled_positions(labels)
    index = rows * labels.shape[1] + positions
    return {"input_ids": input_ids, "attention_mask": attention_mask, "target_index": index, "target_ids": targets,
            "target_sequence": rows, "num_pairs": labels.shape[0] // 2}  # fmt: skip
