"""Train, evaluate, sample and the reference build a policy from the same model settings through one builder
(``simpo.loading.policy_source.build_model_policy``): the same weights and the same attention settings, for a
Llama-shaped and a Mistral-shaped model, pretrained (a saved directory) and random-initialised (an architecture
and a seed), full and LoRA (adapters unmerged in training count as equal to the merged export when their effective
weights are)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from simpo.evaluation.reference_source import evaluation_reference
from simpo.loading.policy_source import load_model_tokenizer, load_policy
from simpo.objectives import DPO
from simpo.sampling.policy import sampling_policy
from tests.conftest import compose_train
from train import prepare

SMALL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2}  # fmt: skip
ARCHITECTURES = {"llama": {"model_type": "llama", **SMALL},
                 "mistral": {"model_type": "mistral", **SMALL, "sliding_window": 8}}  # fmt: skip
# the Llama shape in the default suite, the Mistral shape (sliding window) with the slow tests
SHAPES = ["llama", pytest.param("mistral", marks=pytest.mark.slow)]
# padded batches, as sample and evaluate's generation take them: the layout decides the attention kernel of auto
# (sdpa_segments for packed rows on CPU; the last test), and these tests compare like with like
RUN = ["data.layout=padded", "data.batch_size=2", "trainer.max_steps=1", "validate_before_training=false",
       "data.test_split=null"]


def described(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], str, torch.dtype]:
    """The effective weights, the attention kernel and the dtype of a built policy."""
    return model.state_dict(), model.config._attn_implementation, next(model.parameters()).dtype


def assert_same(built: dict[str, tuple], reference: str) -> None:
    weights, attn, dtype = built[reference]
    for name, (other, other_attn, other_dtype) in built.items():
        assert (other_attn, other_dtype) == (attn, dtype), name
        assert other.keys() == weights.keys() and all(torch.equal(other[k], weights[k]) for k in weights), name


@pytest.mark.parametrize("arch", SHAPES)
def test_random_initialisation_is_one_policy_everywhere(tmp_path, arch):
    cfg = compose_train(tmp_path / "run", [*RUN, "seed=7"])
    with open_dict(cfg):
        cfg.model.architecture = ARCHITECTURES[arch]
    built = {"train": described(prepare(cfg).module.policy)}
    model_section = OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True))
    model, _, _ = sampling_policy(model_section, seed=7, chat_template=None)
    built["sample"] = described(model)
    trained = {"model": OmegaConf.to_container(cfg.model, resolve=True), "seed": 7}
    tokenizer = load_model_tokenizer(None, None)
    reference = evaluation_reference(DPO(), None, trained, tokenizer, "float32", "auto")
    built["evaluate's reference"] = described(reference.factory())
    assert_same(built, "train")


@pytest.mark.parametrize("arch", SHAPES)
def test_a_pretrained_directory_is_one_policy_everywhere(tmp_path, arch, llama3_tokenizer):
    from simpo.models.policy import build_policy

    torch.manual_seed(3)
    saved = tmp_path / "model"
    build_policy(llama3_tokenizer, architecture=ARCHITECTURES[arch]).save_pretrained(saved)
    llama3_tokenizer.save_pretrained(saved)
    cfg = compose_train(tmp_path / "run", [*RUN, "model=hf", f"model.name_or_path={saved}", "loss=dpo",
                                           "reference=model", f"reference.name_or_path={saved}"])  # fmt: skip
    run = prepare(cfg)
    built = {"train": described(run.module.policy), "train's reference": described(run.module.reference.factory())}
    built["evaluate"] = described(load_policy(str(saved), None).model)
    model, _, _ = sampling_policy(OmegaConf.create({"name_or_path": str(saved), "tokenizer": None, "dtype": "float32",
                                                    "attn_implementation": "auto", "architecture": None}),
                                  seed=0, chat_template=None)  # fmt: skip
    built["sample"] = described(model)
    reference = evaluation_reference(DPO(), str(saved), None, load_model_tokenizer(str(saved), None), "float32")
    built["evaluate's reference"] = described(reference.factory())
    assert_same(built, "train")


def effective_weights(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    """(float64) The weights a LoRA-adapted ``PeftModel`` computes with, ``W + (alpha / r) B A`` per adapted layer,
    under the base model's own names: computed here, independently of the export's merge."""
    state = {k: v.double() for k, v in policy.state_dict().items()}
    for name, module in policy.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            a, b = state[f"{name}.lora_A.default.weight"], state[f"{name}.lora_B.default.weight"]
            state[f"{name}.base_layer.weight"] += module.scaling["default"] * (b @ a)
    return {k.removeprefix("base_model.model.").replace(".base_layer.", "."): v
            for k, v in state.items() if ".lora_" not in k}  # fmt: skip


@pytest.mark.parametrize("arch", SHAPES)
def test_lora_adapters_held_in_training_equal_the_merged_policy_everywhere(tmp_path, arch, llama3_tokenizer):
    """Unmerged adapters in training, the merged and the adapter-only export loaded by evaluate and sample: the
    same effective weights (to float32 rounding of the merge), attention kernel and dtype."""
    from simpo.models.adapters import save_export
    from simpo.models.policy import build_policy

    torch.manual_seed(3)
    saved = tmp_path / "model"
    build_policy(llama3_tokenizer, architecture=ARCHITECTURES[arch]).save_pretrained(saved)
    llama3_tokenizer.save_pretrained(saved)
    cfg = compose_train(tmp_path / "run", [*RUN, "model=hf", f"model.name_or_path={saved}", "peft=lora", "peft.r=4"])
    policy = prepare(cfg).module.policy
    with torch.no_grad():  # trained adapters: B is 0 at initialisation, which would make every merge look right
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn_like(param) * 0.1)
    expected = effective_weights(policy)
    attention, dtype = policy.config._attn_implementation, next(policy.parameters()).dtype
    for export in ("merged", "adapter"):
        directory = tmp_path / export
        save_export(policy, directory, None, export, "5GB")
        llama3_tokenizer.save_pretrained(directory)
        section = OmegaConf.create({"name_or_path": str(directory), "tokenizer": None, "dtype": "float32",
                                    "attn_implementation": "auto", "architecture": None})  # fmt: skip
        sampled, _, _ = sampling_policy(section, seed=0, chat_template=None)
        for where, model in {"evaluate": load_policy(str(directory), None).model, "sample": sampled}.items():
            weights, got_attention, got_dtype = described(model)
            assert (got_attention, got_dtype) == (attention, dtype), (export, where)
            assert weights.keys() == expected.keys(), (export, where)
            for key, value in expected.items():
                torch.testing.assert_close(weights[key].double(), value, rtol=1e-6, atol=1e-7, msg=key)


def test_evaluate_builds_its_policy_and_reference_for_the_layout_it_scores(tmp_path, monkeypatch):
    """``attn_implementation=auto`` depends on the batch layout (on CUDA: flex attention for packed and shared-prompt
    batches, whose masks flash attention cannot take): evaluate's policy and reference get the chosen layout."""
    from simpo.models.policy import build_policy

    tokenizer = load_model_tokenizer(None, None)
    saved = tmp_path / "model"
    build_policy(tokenizer, architecture=ARCHITECTURES["llama"]).save_pretrained(saved)
    tokenizer.save_pretrained(saved)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the choice CUDA would make; nothing runs
    for layout, expected in (("padded", "sdpa"), ("shared_prompt", "flex_attention")):
        assert described(load_policy(str(saved), None, layout=layout).model)[1] == expected, layout
        reference = evaluation_reference(DPO(), str(saved), None, tokenizer, "float32", "auto", layout)
        assert described(reference.factory())[1] == expected, layout
