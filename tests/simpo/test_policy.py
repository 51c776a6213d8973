"""Building the policy: real architectures saved and reloaded, dropout off, attention choice, the module's
labelled-positions forward equal to the plain full-logits path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from simpo.core.labelled_head import LABELLED_ONLY_MODEL_TYPES
from simpo.core.logprobs import sequence_logps
from simpo.models.policy import build_policy, disable_dropout, resolve_attn_implementation
from simpo.objectives import SimPO
from simpo.training.module import SimPOModule
from tests.conftest import padded_batch

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 128}  # fmt: skip
ARCHITECTURES = {
    "llama": {"model_type": "llama", **TINY, "attention_dropout": 0.1},
    "mistral": {"model_type": "mistral", **TINY, "sliding_window": 64},
    "gemma2": {"model_type": "gemma2", **TINY, "head_dim": 8, "final_logit_softcapping": 0.3,
               "attn_logit_softcapping": 50.0, "query_pre_attn_scalar": 8},
}  # fmt: skip


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_random_init_save_and_reload(llama3_tokenizer, tmp_path, arch):
    torch.manual_seed(0)
    model = build_policy(llama3_tokenizer, architecture=ARCHITECTURES[arch], attn_implementation="eager")
    assert model.config.vocab_size == len(llama3_tokenizer) == 128256
    assert model.config.bos_token_id == 128000 and model.config.eos_token_id == 128009
    model.save_pretrained(tmp_path)
    reloaded = build_policy(llama3_tokenizer, name_or_path=str(tmp_path), attn_implementation="eager")
    ids = torch.tensor([[128000, 9906, 1917, 0]])
    assert torch.equal(model(input_ids=ids).logits, reloaded(input_ids=ids).logits)


def test_a_loaded_policy_trains_in_train_mode_so_gradient_checkpointing_applies(llama3_tokenizer, tmp_path):
    build_policy(llama3_tokenizer, architecture=ARCHITECTURES["llama"]).save_pretrained(tmp_path)
    loaded = build_policy(llama3_tokenizer, name_or_path=str(tmp_path), gradient_checkpointing=True)
    assert loaded.training and all(m.training for m in loaded.modules())  # from_pretrained returns eval mode
    mlp, calls = loaded.model.layers[0].mlp, []
    forward = mlp.forward
    mlp.forward = lambda *args, **kwargs: calls.append(1) or forward(*args, **kwargs)
    loaded(input_ids=torch.tensor([[128000, 9906, 1917]])).logits.sum().backward()
    assert len(calls) == 2  # checkpointed: the layer ran in forward and again in backward (in eval mode: once)


def test_dropout_is_disabled_everywhere():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.3))
    model[0].attention_dropout = 0.2  # what HF attention modules copy from their config
    disable_dropout(model)
    assert model[1].p == 0.0 and model[0].attention_dropout == 0.0


def test_built_policy_has_no_dropout(llama3_tokenizer):
    model = build_policy(llama3_tokenizer, architecture=ARCHITECTURES["llama"], attn_implementation="eager")
    assert model.config.attention_dropout == 0.0
    assert all(layer.self_attn.attention_dropout == 0.0 for layer in model.model.layers)
    model.train()
    ids = torch.tensor([[128000, 9906, 1917]])
    assert torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)  # deterministic in train mode


def test_attention_auto_picks_sdpa_without_flash_attn_on_cuda():
    assert resolve_attn_implementation("auto", torch.float32) == "sdpa"  # no CUDA, fp32 here
    assert resolve_attn_implementation("eager", torch.bfloat16) == "eager"
    assert resolve_attn_implementation("auto", torch.float32, "gemma2") == "eager"  # transformers: no SDPA for it
    assert resolve_attn_implementation("auto", torch.float32, "llama", "shared_prompt") == "sdpa"  # flex on CUDA
    assert resolve_attn_implementation("auto", torch.float32, "llama", "packed") == "sdpa_segments"


def test_errors_name_the_setting(llama3_tokenizer):
    with pytest.raises(ValueError, match=r"model\.name_or_path"):
        build_policy(llama3_tokenizer)
    with pytest.raises(ValueError, match=r"model\.dtype"):
        build_policy(llama3_tokenizer, architecture=ARCHITECTURES["llama"], dtype="float8")
    with pytest.raises(ValueError, match=r"model\.tokenizer"):
        build_policy(llama3_tokenizer, architecture={**ARCHITECTURES["llama"], "vocab_size": 1000})


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_module_forward_equals_full_logits_path(llama3_tokenizer, arch):
    """The labelled-positions projection (with Gemma 2's final soft cap) equals log-probs of the full logits."""
    assert arch in LABELLED_ONLY_MODEL_TYPES
    torch.manual_seed(0)
    policy = build_policy(llama3_tokenizer, architecture=ARCHITECTURES[arch], attn_implementation="eager").double()
    module = SimPOModule(policy, SimPO())
    ids = torch.randint(0, 128000, (4, 12))
    labels = ids.clone()
    labels[:, :5] = -100
    labels[1, 9:] = -100  # padding
    attention_mask = (labels != -100).long()
    attention_mask[:, :5] = 1
    batch = padded_batch(ids, attention_mask, labels)
    chosen, rejected = module(batch)
    full = sequence_logps(policy(input_ids=ids, attention_mask=attention_mask).logits, labels)
    assert torch.allclose(torch.cat([chosen.logp_sum, rejected.logp_sum]), full.logp_sum, rtol=1e-10)
    assert torch.equal(torch.cat([chosen.token_count, rejected.token_count]), full.token_count)
    assert torch.allclose(torch.cat([chosen.logit_sum, rejected.logit_sum]), full.logit_sum, rtol=1e-10)
    if arch == "gemma2":  # the soft cap is really in play: raw lm_head logits exceed it
        hidden = policy.model(input_ids=ids).last_hidden_state
        assert policy.lm_head(hidden).abs().max() > 0.3
