"""KTO's mismatched pseudo-pairs are counted in ``data.max_tokens_per_batch``: the reference collator that adds them
is the collator the token budget plans with, so every micro-batch that runs fits the budget as laid out."""

from __future__ import annotations

import pytest

from data.collate import LAYOUTS
from data.datamodule import PreferenceDataModule
from simpo.objectives import DPO, KTO
from simpo.reference.build import install_reference_collator
from tests.conftest import ROOT

BUDGET = 1024


def planned(tokenizer, layout: str, objective) -> PreferenceDataModule:
    module = PreferenceDataModule(tokenizer, str(ROOT / "data" / "tiny_prefs"), max_length=128, max_prompt_length=64,
                                  layout=layout, pack_length=256, max_tokens_per_batch=BUDGET, cache=False)  # fmt: skip
    module.load("fit")
    install_reference_collator(module, objective, 128)
    return module


# two layouts in the default suite, the other two with the slow tests
SLOW = ("packed", "shared_prompt")


@pytest.mark.parametrize("layout", [pytest.param(x, marks=[pytest.mark.slow] if x in SLOW else []) for x in LAYOUTS])
def test_every_kto_micro_batch_fits_the_budget_with_its_pseudo_pairs(llama3_tokenizer, layout):
    module = planned(llama3_tokenizer, layout, KTO())
    for role in ("train", "val"):
        batches, budget = module.micro_batches[role]
        pairs = module.splits[role]
        assert sorted(i for batch in batches for i in batch) == list(range(len(pairs)))
        for batch in batches:  # every micro-batch, collated as the loader collates it
            collated = module.collator([pairs[i] for i in batch])
            assert collated["num_kl_pairs"] == len(batch)
            assert collated["input_ids"].numel() == budget.cost(batch) <= BUDGET, (role, batch)


def test_the_pseudo_pairs_are_what_the_plan_counts(llama3_tokenizer):
    """Without the pseudo-pairs in the plan a KTO micro-batch would exceed the budget (about twice the tokens):
    planned with them, micro-batches hold about half as many pairs as DPO's."""
    kto = planned(llama3_tokenizer, "padded", KTO())
    dpo = planned(llama3_tokenizer, "padded", DPO())
    kto_batches, dpo_batches = kto.micro_batches["train"][0], dpo.micro_batches["train"][0]
    pairs = dpo.splits["train"]
    too_big = [b for b in dpo_batches if kto.collator([pairs[i] for i in b])["input_ids"].numel() > BUDGET]
    assert len(too_big) > len(dpo_batches) // 2  # DPO's plan, run with KTO's pseudo-pairs: over the budget
    assert 1.6 < len(kto_batches) / len(dpo_batches) < 2.6
