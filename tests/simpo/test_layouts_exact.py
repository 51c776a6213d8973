"""Packed and shared-prompt layouts compute exactly what the padded layout computes: per-sequence log-prob sums, token
counts, logit sums and gradients, for Llama, Mistral (sliding window) and Gemma 2 (alternating sliding windows, soft
caps), with the chunked head and the full-logits path, on real tokenised pairs of the bundled data set."""

from __future__ import annotations

import pytest
import torch

from data.collate import LAYOUTS, PreferenceCollator
from data.datamodule import PreferenceDataModule
from simpo.core.attention_masks import allowed
from simpo.models.policy import build_policy
from simpo.objectives import SimPO
from simpo.training.module import SimPOModule
from tests.conftest import ROOT

SMALL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2}  # fmt: skip
ARCHITECTURES = {
    "llama": {"model_type": "llama", **SMALL},
    "mistral": {"model_type": "mistral", **SMALL, "sliding_window": 8},  # shorter than the sequences: it matters
    "gemma2": {"model_type": "gemma2", **SMALL, "head_dim": 8, "sliding_window": 8, "final_logit_softcapping": 5.0,
               "attn_logit_softcapping": 10.0, "query_pre_attn_scalar": 8},
}  # fmt: skip
FP32 = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def pairs(llama3_tokenizer) -> list[dict]:
    """Six tokenised pairs of the bundled test split, of varied lengths."""
    data = PreferenceDataModule(llama3_tokenizer, str(ROOT / "data" / "tiny_prefs"), max_length=128,
                                max_prompt_length=64, cache=False)  # fmt: skip
    data.setup("validate")
    rows = list(data.splits["val"])
    rows.sort(key=lambda r: len(r["chosen_input_ids"]) + len(r["rejected_input_ids"]))
    return [rows[0], rows[50], rows[100], rows[150], rows[200], rows[-1]]


def stats(module: SimPOModule, batch: dict) -> dict[str, torch.Tensor]:
    chosen, rejected = module(batch)
    return {
        "logp_sum": torch.cat([chosen.logp_sum, rejected.logp_sum]),
        "token_count": torch.cat([chosen.token_count, rejected.token_count]),
        "logit_sum": torch.cat([chosen.logit_sum, rejected.logit_sum]),
    }


# (architecture, attention, chunk_size): every architecture with the chunked head, each kernel (transformers runs
# Gemma 2 with eager attention only; sdpa_segments is SDPA per packed segment), and the full-logits path
CASES = [("llama", "sdpa", 7), ("llama", "eager", None), ("mistral", "sdpa", 7), ("mistral", "eager", 7),
         ("gemma2", "eager", 7), ("gemma2", "eager", None), ("llama", "sdpa_segments", 7),
         ("mistral", "sdpa_segments", None)]  # fmt: skip


@pytest.mark.parametrize(("arch", "attn", "chunk_size"), CASES)
def test_every_layout_equals_padded(pairs, llama3_tokenizer, arch, attn, chunk_size):
    torch.manual_seed(0)
    policy = build_policy(llama3_tokenizer, architecture=ARCHITECTURES[arch], attn_implementation=attn)
    module = SimPOModule(policy, SimPO(), chunk_size=chunk_size)
    results, grads = {}, {}
    for layout in LAYOUTS:
        collate = PreferenceCollator(pad_token_id=0, layout=layout, pack_length=96)
        batch = collate(pairs)
        policy.zero_grad()
        out = stats(module, batch)
        (out["logp_sum"] * torch.linspace(0.5, 1.5, 12)).sum().backward()  # every sequence weighs differently
        results[layout] = {k: v.detach() for k, v in out.items()}
        grads[layout] = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
    for layout in LAYOUTS[1:]:
        for key in ("logp_sum", "token_count", "logit_sum"):
            torch.testing.assert_close(results[layout][key], results["padded"][key], **FP32, msg=f"{layout} {key}")
        for name, grad in grads["padded"].items():  # fp32 sums in another order: compare whole tensors
            error = (grads[layout][name] - grad).norm() / grad.norm()
            assert error < 1e-5, f"{layout} {name}: relative error {error:.2e}"


def test_layouts_save_tokens(pairs):
    """Packing removes padding; sharing the prompt computes it once per pair."""
    sizes = {}
    for layout in LAYOUTS:
        batch = PreferenceCollator(pad_token_id=0, layout=layout, pack_length=256)(pairs)
        sizes[layout] = (batch["input_ids"].numel(), int(batch["attention_mask"].sum()), batch["num_tokens"],
                         batch["input_ids"].shape[0])  # fmt: skip
    real = sum(len(p["chosen_input_ids"]) + len(p["rejected_input_ids"]) for p in pairs)
    prompts = sum(next(i for i, x in enumerate(p["chosen_labels"]) if x != -100) for p in pairs)
    assert sizes["padded"][1] == sizes["packed"][1] == real
    assert sizes["shared_prompt"][1] == sizes["shared_prompt_packed"][1] == real - prompts
    assert sizes["packed"][0] < sizes["padded"][0]  # less padding
    assert sizes["packed"][3] < sizes["padded"][3] and sizes["shared_prompt_packed"][3] < sizes["shared_prompt"][3]
    assert {s[2] for s in sizes.values()} == {real}  # throughput counts the same tokens in every layout


def test_shared_prompt_mask_by_hand():
    """One pair: prompt [a b], chosen [c d], rejected [e]: rejected sees the prompt and itself, never chosen."""
    pair = {"chosen_input_ids": [1, 2, 3, 4], "chosen_labels": [-100, -100, 3, 4],
            "rejected_input_ids": [1, 2, 5], "rejected_labels": [-100, -100, 5]}  # fmt: skip
    batch = PreferenceCollator(pad_token_id=0, layout="shared_prompt", pad_to_multiple_of=6)([pair])
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 2, 0]]
    # scored: chosen 3 from position 1, chosen 4 from 2; rejected 5 from the prompt's last token (1)
    assert batch["target_index"].tolist() == [1, 2, 1]
    assert batch["target_ids"].tolist() == [3, 4, 5] and batch["target_sequence"].tolist() == [0, 0, 1]
    mask = allowed(batch["segment_ids"], batch["branch_ids"], batch["position_ids"])[0, 0].int().tolist()
    assert mask == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 0, 0, 1, 0],  # rejected: prompt and itself
        [0, 0, 0, 0, 0, 1],  # padding: only itself
    ]
    window = allowed(batch["segment_ids"], batch["branch_ids"], batch["position_ids"], window=2)[0, 0].int().tolist()
    assert window[4] == [0, 1, 0, 0, 1, 0]  # position 2 sees positions 1 and 2 only


def test_a_pair_whose_prompts_differ_cannot_share_one():
    pair = {"chosen_input_ids": [1, 2, 3], "chosen_labels": [-100, -100, 3],
            "rejected_input_ids": [1, 9, 5], "rejected_labels": [-100, -100, 5]}  # fmt: skip
    with pytest.raises(ValueError, match=r"do not share their prompt tokens; use data.layout=padded"):
        PreferenceCollator(pad_token_id=0, layout="shared_prompt")([pair])


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_flex_attention_block_masks_equal_the_dense_masks(pairs, llama3_tokenizer, arch):
    """The GPU kernel's BlockMask encodes the same rule (forward only: FlexAttention has no CPU backward)."""
    results = {}
    for attn in ("eager", "flex_attention"):
        torch.manual_seed(0)
        policy = build_policy(llama3_tokenizer, architecture=ARCHITECTURES[arch], attn_implementation=attn)
        batch = PreferenceCollator(pad_token_id=0, layout="shared_prompt_packed", pack_length=160)(pairs)
        with torch.no_grad():
            results[attn] = stats(SimPOModule(policy, SimPO(), chunk_size=16), batch)["logp_sum"]
    torch.testing.assert_close(results["flex_attention"], results["eager"], **FP32)


STEPS = ["trainer.max_steps=4", "validate_before_training=false", "data.test_split=null"]


def train_losses(run_dir, *overrides: str) -> dict[int, float]:
    from tests.conftest import TINY_OVERRIDES, compose_train
    from tests.test_train import column, read_metrics
    from train import train

    train(compose_train(run_dir, [*TINY_OVERRIDES, *STEPS, *overrides]))
    return column(read_metrics(run_dir), "train/loss")


@pytest.fixture(scope="module")
def padded_losses(tmp_path_factory) -> dict[int, float]:
    return train_losses(tmp_path_factory.mktemp("padded"))


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS[1:])
def test_training_steps_equal_padded(tmp_path, padded_losses, layout):
    """Four optimizer steps of train.py give the padded run's losses in every layout."""
    got = train_losses(tmp_path, f"data.layout={layout}")
    assert sorted(got) == [0, 1, 2, 3]
    for step, value in padded_losses.items():
        assert got[step] == pytest.approx(value, abs=1e-4), step
