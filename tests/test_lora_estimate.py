"""The memory estimate behind the 8B table of docs/lora.md: parameter counts from the shape equal the built
models', and the estimated weights + gradients + AdamW bytes equal the bytes measured after a real optimizer step
(full and LoRA)."""

from __future__ import annotations

import pytest
import torch

from benchmarks.lora_vs_full import LLAMA3_8B, LlamaShape, measured_state_bytes, training_state_bytes
from simpo.models.adapters import AdapterSettings, apply_adapters
from simpo.models.policy import build_policy
from simpo.training.optim import build_optimizer

SMALL = LlamaShape(vocab=128256, hidden=64, layers=2, intermediate=160, heads=4, kv_heads=2, tied=True)


def small_policy(tokenizer):
    torch.manual_seed(0)
    arch = {"model_type": "llama", "hidden_size": SMALL.hidden, "num_hidden_layers": SMALL.layers,
            "intermediate_size": SMALL.intermediate, "num_attention_heads": SMALL.heads,
            "num_key_value_heads": SMALL.kv_heads, "tie_word_embeddings": SMALL.tied}  # fmt: skip
    return build_policy(tokenizer, architecture=arch)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_estimate_equals_the_measured_training_state(llama3_tokenizer, method):
    policy = small_policy(llama3_tokenizer)
    assert SMALL.total_params() == sum(p.numel() for p in policy.parameters())
    if method == "lora":
        policy = apply_adapters(policy, AdapterSettings(r=8, alpha=16))
        assert SMALL.lora_params(8) == sum(p.numel() for p in policy.parameters() if p.requires_grad)
    optimizer, _ = build_optimizer(policy, 1e-3, 0.0, (0.9, 0.999), 1e-8, 0.0, total_steps=2)
    ids = torch.randint(0, SMALL.vocab, (2, 8))
    policy(input_ids=ids).logits.logsumexp(-1).mean().backward()
    optimizer.step()
    measured = measured_state_bytes(policy, optimizer)
    estimate = training_state_bytes(SMALL, method, r=8, base_bytes=4)
    assert estimate == pytest.approx(measured, rel=1e-3)  # AdamW's scalar step counters aside


def test_the_8b_table_by_hand():
    assert LLAMA3_8B.total_params() == 8_030_261_248  # Meta-Llama-3-8B's published count
    lora = LLAMA3_8B.lora_params(16)
    assert lora == 32 * 16 * (2 * 8192 + 2 * 5120 + 3 * 18432)  # q, o: 4096+4096; k, v: 4096+1024; mlp: 4096+14336
    assert training_state_bytes(LLAMA3_8B, "full") == 16 * 8_030_261_248
    assert training_state_bytes(LLAMA3_8B, "full", devices=8) == 2 * 8_030_261_248
    assert training_state_bytes(LLAMA3_8B, "lora", 16, base_bytes=2) == 2 * 8_030_261_248 + 16 * lora
    qlora = training_state_bytes(LLAMA3_8B, "qlora", 16)
    assert 7.5 * 1024**3 < qlora < 8.5 * 1024**3  # ~0.52 B per projection weight + fp32 embeddings/head + adapters
