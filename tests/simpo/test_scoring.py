"""The scorer (``simpo.scoring``) is the one scoring forward: without Lightning or Hydra, in every batch layout, with
the chunked head and full logits, its per-sequence sums equal a float64 computation done here one sequence at a
time; the training step's statistics are the scorer's."""

from __future__ import annotations

import grimp
import pytest
import torch

from data.collate import LAYOUTS, PreferenceCollator
from data.datamodule import PreferenceDataModule
from simpo.models.policy import build_policy
from simpo.objectives import SimPO
from simpo.scoring import Scorer
from simpo.training.module import SimPOModule
from tests.conftest import ROOT

LLAMA = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2}  # fmt: skip


@pytest.fixture(scope="module")
def pairs(llama3_tokenizer) -> list[dict]:
    """Five tokenised pairs of the bundled test split, of varied lengths."""
    data = PreferenceDataModule(llama3_tokenizer, str(ROOT / "data" / "tiny_prefs"), max_length=96,
                                max_prompt_length=48, cache=False)  # fmt: skip
    data.setup("validate")
    rows = sorted(data.splits["val"], key=lambda r: len(r["chosen_input_ids"]) + len(r["rejected_input_ids"]))
    return [rows[i] for i in (0, 40, 80, 120, -1)]


def float64_sums(policy: torch.nn.Module, pairs: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """(2P,) summed log-probs and label counts, chosen then rejected: each sequence alone (no padding, no mask), the
    full logits of a float64 copy of ``policy``, log-softmax, the labelled tokens' entries summed."""
    model = type(policy)(policy.config).double().eval()
    model.load_state_dict({k: v.double() for k, v in policy.state_dict().items()})
    sums, counts = [], []
    sides = [(p["chosen_input_ids"], p["chosen_labels"]) for p in pairs]
    sides += [(p["rejected_input_ids"], p["rejected_labels"]) for p in pairs]
    with torch.no_grad():
        for ids, labels in sides:
            logits = model(torch.tensor([ids])).logits[0]  # (T, V)
            logps = torch.log_softmax(logits[:-1], dim=-1)
            target = torch.tensor(labels[1:])
            scored = target != -100
            sums.append(logps[scored].gather(-1, target[scored][:, None]).sum())
            counts.append(scored.sum())
    return torch.stack(sums), torch.stack(counts)


@pytest.mark.parametrize("chunk_size", [5, None])
def test_every_layout_equals_a_float64_sequence_by_sequence_computation(pairs, llama3_tokenizer, chunk_size):
    torch.manual_seed(0)
    policy = build_policy(llama3_tokenizer, architecture=LLAMA, attn_implementation="sdpa")
    expected, counts = float64_sums(policy, pairs)
    scorer = Scorer(chunk_size=chunk_size)
    scorer.attach(policy)
    for layout in LAYOUTS:
        batch = PreferenceCollator(pad_token_id=0, layout=layout, pack_length=160)(pairs)
        with torch.no_grad():
            got = scorer.sequence_stats(policy, batch)
        assert torch.equal(got.token_count.long(), counts.long()), layout
        torch.testing.assert_close(got.logp_sum.double(), expected, rtol=1e-5, atol=1e-4, msg=layout)


def test_the_training_step_scores_through_the_scorer(pairs, llama3_tokenizer):
    torch.manual_seed(0)
    policy = build_policy(llama3_tokenizer, architecture=LLAMA)
    module = SimPOModule(policy, SimPO(), chunk_size=5)
    batch = PreferenceCollator(pad_token_id=0, layout="shared_prompt")(pairs)
    with torch.no_grad():
        pair, _, _ = module.pair_logps(batch)
        direct, _, _ = Scorer(chunk_size=5).pair_logps(policy, batch)
    assert torch.equal(pair.chosen_logp_sum, direct.chosen_logp_sum)
    assert torch.equal(pair.rejected_logp_sum, direct.rejected_logp_sum)


def test_the_scorer_imports_no_lightning_and_no_hydra():
    """No chain of imports (inside functions and for type checking included) leads from the scorer to either."""
    graph = grimp.build_graph("simpo", "data", "callbacks", include_external_packages=True,
                              exclude_type_checking_imports=False)  # fmt: skip
    for package in ("lightning", "hydra", "omegaconf"):
        assert not graph.chain_exists(importer="simpo.scoring", imported=package, as_packages=True), package
    assert graph.chain_exists(importer="simpo.scoring", imported="torch", as_packages=True)  # the check can fail


def test_bad_head_settings_are_named():
    with pytest.raises(ValueError, match=r"model\.chunk_size must be null or a positive integer, not 0"):
        Scorer(chunk_size=0)
    with pytest.raises(ValueError, match=r"model\.head_backward must be one of"):
        Scorer(head_backward="stash")
