"""Train, evaluate, sample and the reference build a policy from the same model settings through one builder
(``simpo.loading.policy_source.build_model_policy``): the same weights and the same attention settings, for a
Llama-shaped and a Mistral-shaped model, pretrained (a saved directory) and random-initialised (an architecture
and a seed)."""

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
RUN = ["data.batch_size=2", "trainer.max_steps=1", "validate_before_training=false", "data.test_split=null"]


def described(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], str, torch.dtype]:
    """The effective weights, the attention kernel and the dtype of a built policy."""
    return model.state_dict(), model.config._attn_implementation, next(model.parameters()).dtype


def assert_same(built: dict[str, tuple], reference: str) -> None:
    weights, attn, dtype = built[reference]
    for name, (other, other_attn, other_dtype) in built.items():
        assert (other_attn, other_dtype) == (attn, dtype), name
        assert other.keys() == weights.keys() and all(torch.equal(other[k], weights[k]) for k in weights), name


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
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


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
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
