"""``reference=cached`` equals ``reference=model`` (fp32): the table, filled by one pass in batches of another size
and order, gives every training batch the same reference log-prob sums as running the frozen reference on it, for
the matched pairs and KTO's mismatched ones, in the padded and a packed layout."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from data.datamodule import PreferenceDataModule
from simpo.models.policy import build_policy
from simpo.objectives import OBJECTIVES
from simpo.reference.build import install_reference_collator
from simpo.reference.pass_ import reference_rows
from simpo.reference.provider import CachedReference, ModelReference, ReferencePlacement
from simpo.reference.table import ReferenceTable
from simpo.scoring import Scorer
from tests.conftest import ROOT

ARCHITECTURE = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "tiny_llama.yaml").architecture)


@pytest.mark.parametrize(
    ("objective", "layout"), [("dpo", "padded"), pytest.param("kto", "shared_prompt_packed", marks=pytest.mark.slow)]
)
def test_cached_reference_equals_the_live_reference(small_pairs, llama3_tokenizer, tmp_path, objective, layout):
    torch.manual_seed(0)
    datamodule = PreferenceDataModule(llama3_tokenizer, str(small_pairs), val_size=8, batch_size=4, max_length=128,
                                      max_prompt_length=64, layout=layout, cache=False, seed=1)  # fmt: skip
    datamodule.prepare_data()
    datamodule.load("fit")
    loss = OBJECTIVES[objective]()
    data = install_reference_collator(datamodule, loss, 128)
    policy = build_policy(llama3_tokenizer, architecture=ARCHITECTURE)
    frozen = copy.deepcopy(policy)
    scorer = Scorer(chunk_size=64)
    scorer.attach(policy)
    live = ModelReference(lambda: frozen)
    live.prepare(ReferencePlacement(scorer, policy, lambda model: model.to("cpu"), torch.device("cpu")))

    splits = [datamodule.splits["train"], datamodule.splits["val"]]
    rows = reference_rows(lambda b: scorer.sequence_stats(frozen, b), splits, datamodule.collator, batch_size=3,
                          device=torch.device("cpu"))  # fmt: skip
    assert len(rows) == 32
    cached = CachedReference(tmp_path / "t.pt", {}, lambda: frozen, True, data)
    cached.table = ReferenceTable.from_rows(rows)

    checked = 0
    for batch in [*datamodule.train_dataloader(), *datamodule.val_dataloader()]:
        want = live.sums(batch)  # (2n,)
        got = cached.sums(batch)
        assert got.shape == want.shape == (2 * batch["num_pairs"],)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-5)
        checked += int(batch["num_pairs"]) - int(batch["num_kl_pairs"])
    assert checked == 32
    if objective == "kto":
        assert batch["num_kl_pairs"] == batch["num_pairs"] // 2
