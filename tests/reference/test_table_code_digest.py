"""A cached reference table is keyed by the code that scores the pairs (the scorer and the reference pass): a table
written by another version of that code is not reused; the pass runs again and says why."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import OmegaConf

from data.datamodule import PreferenceDataModule
from simpo.models.policy import build_policy
from simpo.objectives import DPO
from simpo.reference.build import install_reference_collator
from simpo.reference.identity import CODE_FILES, code_digest
from simpo.reference.provider import CachedReference, ReferencePlacement
from simpo.reference.table import ReferenceTable
from simpo.scoring import Scorer
from tests.conftest import ROOT

ARCHITECTURE = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "tiny_llama.yaml").architecture)


def test_the_scorer_is_part_of_the_code_digest():
    simpo = Path(__file__).resolve().parents[2] / "simpo"
    assert "scoring.py" in CODE_FILES and all((simpo / name).is_file() for name in CODE_FILES)
    assert len(code_digest()) == 16


def test_a_table_of_other_scoring_code_is_recomputed_with_a_message(small_pairs, llama3_tokenizer, tmp_path, caplog):
    datamodule = PreferenceDataModule(llama3_tokenizer, str(small_pairs), val_size=8, batch_size=4, max_length=128,
                                      max_prompt_length=64, cache=False, seed=1)  # fmt: skip
    datamodule.prepare_data()
    datamodule.load("fit")
    data = install_reference_collator(datamodule, DPO(), 128)
    torch.manual_seed(0)
    policy = build_policy(llama3_tokenizer, architecture=ARCHITECTURE)
    scorer = Scorer(chunk_size=64)
    scorer.attach(policy)
    placement = ReferencePlacement(scorer, policy, lambda model: model.to("cpu"), torch.device("cpu"), True)
    meta = {"data": {"train": "abc"}, "reference": {"random_init": "tiny", "seed": 1}, "dtype": "float32"}
    old = tmp_path / "written_by_older_code.pt"
    ReferenceTable.from_rows({7: [-1.0, -2.0, float("nan"), float("nan")]}).save(old, meta)
    other = tmp_path / "another_reference.pt"
    ReferenceTable.from_rows({7: [-1.0, -2.0, float("nan"), float("nan")]}).save(other, {**meta, "dtype": "bfloat16"})
    cached = CachedReference(tmp_path / "current.pt", meta, lambda: policy, True, data)
    with caplog.at_level(logging.INFO, logger="simpo.reference.provider"):
        cached.prepare(placement)
    expected = "changed since the table of these pairs and reference was computed (written_by_older_code.pt)"
    assert expected in caplog.text
    assert "another_reference.pt" not in caplog.text
    assert len(cached.table) == 32 and (tmp_path / "current.pt").is_file()
    assert 7 not in cached.table.keys.tolist()
