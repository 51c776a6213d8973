"""The throughput callback: tokens/s and peak memory per optimizer step in a tiny training run, and the model FLOPs
behind its two MFU conventions against an independent count."""

from __future__ import annotations

import csv

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from callbacks.throughput import ModelFlops, batch_counts, peak_flops
from data.collate import PreferenceCollator
from tests.conftest import TINY_OVERRIDES, compose_train
from train import train


def test_logs_tokens_per_sec_and_peak_memory_every_optimizer_step(tmp_path):
    overrides = [*TINY_OVERRIDES, "trainer.max_steps=4", "trainer.accumulate_grad_batches=2",
                 "data.test_split=null", "callbacks.hf_export=null", "callbacks.model_checkpoint=null"]  # fmt: skip
    train(compose_train(tmp_path, overrides))
    with (tmp_path / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    tokens = {int(r["step"]): float(r["train/tokens_per_sec"]) for r in rows if r.get("train/tokens_per_sec")}
    memory = {int(r["step"]): float(r["train/peak_memory_mb"]) for r in rows if r.get("train/peak_memory_mb")}
    assert sorted(tokens) == sorted(memory) == [0, 1, 2, 3]  # once per optimizer step, not per micro-batch
    # 2 micro-batches of 8 sequences of up to 128 tokens each, in well under a minute and over a millisecond
    assert all(16 / 60 < v < 2 * 8 * 128 * 1000 for v in tokens.values())
    assert all(100 < v < 24 * 1024 for v in memory.values())  # MiB: torch + a 128k-vocabulary model, < RAM
    assert "train/mfu" not in rows[0]  # GPU only


def test_peak_flops_table():
    assert peak_flops("NVIDIA H100 80GB HBM3") == pytest.approx(989e12)
    assert peak_flops("NVIDIA H100 PCIe") == pytest.approx(756e12)
    assert peak_flops("NVIDIA H200") == pytest.approx(989e12)
    assert peak_flops("NVIDIA A100-SXM4-80GB") == pytest.approx(312e12)
    assert peak_flops("Some Future GPU") is None


def _pairs(seed: int, n: int = 3) -> list[dict]:
    """Tokenised pairs of varied lengths whose chosen and rejected sequences share their prompt (every layout)."""
    generator = torch.Generator().manual_seed(seed)

    def tokens(low: int, high: int) -> list[int]:
        length = int(torch.randint(low, high, (1,), generator=generator))
        return torch.randint(2, 200, (length,), generator=generator).tolist()

    pairs = []
    for _ in range(n):
        prompt = [1, *tokens(2, 9)]
        sides = {}
        for side in ("chosen", "rejected"):
            response = tokens(1, 12)
            sides[f"{side}_input_ids"] = prompt + response
            sides[f"{side}_labels"] = [-100] * len(prompt) + response
        pairs.append(sides)
    return pairs


@pytest.mark.parametrize("tied", [True, False])
def test_model_flops_of_every_layout_equal_an_independent_count(tied):
    """Both MFU conventions, counted from real batches of every layout, against a float64 count made another way:
    parameters by name, the causal triangle as the ones of a lower-triangular matrix, the scored tokens as the
    labels that are not -100."""
    config = LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied)  # fmt: skip
    model = LlamaForCausalLM(config)
    flops = ModelFlops.of(model)
    params = dict(model.named_parameters())  # a tied head is listed once, as the embedding
    embedding = params["model.embed_tokens.weight"].numel()
    body = sum(p.numel() for name, p in params.items() if "embed_tokens" not in name and "lm_head" not in name)
    attention = 4.0 * 3 * 4 * (32 // 4)
    pairs = _pairs(seed=int(tied))
    sequences = [(p[f"{side}_input_ids"], p[f"{side}_labels"]) for side in ("chosen", "rejected") for p in pairs]
    tokens = float(sum(len(ids) for ids, _ in sequences))
    labelled = float(sum(sum(label != -100 for label in labels) for _, labels in sequences))
    triangle = sum(float(torch.ones(len(ids), len(ids), dtype=torch.float64).tril().sum()) for ids, _ in sequences)
    squares = sum(float(len(ids)) ** 2 for ids, _ in sequences)
    needed = 6 * body * tokens + 6 * 256 * 32 * labelled + 3 * attention * triangle
    palm_n = sum(p.numel() for p in params.values()) - (0 if tied else embedding)
    palm = 6 * palm_n * tokens + 3 * attention * squares
    for layout in ("padded", "packed", "shared_prompt", "shared_prompt_packed"):
        counts = batch_counts(PreferenceCollator(pad_token_id=0, layout=layout, pack_length=24)(pairs))
        assert flops.needed(counts["tokens"], counts["labelled"], counts["causal_pairs"]) == pytest.approx(needed)
        assert flops.palm(counts["tokens"], counts["squares"]) == pytest.approx(palm)
    assert needed < palm  # the head for scored tokens only, the causal triangle instead of the square


def test_a_batch_without_sequence_lengths_gives_no_mfu_counts():
    counts = batch_counts({"num_tokens": 10, "target_ids": torch.zeros(3)})
    assert counts == {"tokens": 10, "labelled": 3, "causal_pairs": -1, "squares": -1}


def test_mfu_is_logged_by_both_conventions_where_a_peak_is_given(tmp_path):
    overrides = [*TINY_OVERRIDES, "trainer.max_steps=2", "data.test_split=null", "callbacks.hf_export=null",
                 "callbacks.model_checkpoint=null", "callbacks.throughput.peak_flops_per_sec=1e12"]  # fmt: skip
    train(compose_train(tmp_path, overrides))
    with (tmp_path / "metrics.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("train/mfu")]
    assert [int(r["step"]) for r in rows] == [0, 1]
    for row in rows:
        mfu, palm = float(row["train/mfu"]), float(row["train/mfu_palm"])
        # tiny Llama, 128k vocabulary: the head dominates, and only the responses' tokens need it
        assert 0 < mfu < palm < 1, row
