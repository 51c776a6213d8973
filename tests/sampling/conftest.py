"""Fixtures of the sampling tests: a tiny random Llama policy and tiny random Llama reward models, each saved with
``save_pretrained`` beside the bundled Llama 3 tokenizer, and the composed ``conf/sample.yaml``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

import sample  # noqa: F401  (registers the ${project_root:} resolver)
from data.tokenizers import load_tokenizer

ROOT = Path(__file__).resolve().parents[2]
PAD = 128004  # <|finetune_right_pad_id|>: never in a templated conversation, so the head finds each row's end

# 6 prompts in 3 shards, 3 short samples each, 1 test pair: the whole pipeline in seconds on a CPU (top_p=1 skips
# sorting 128k logits per token, the slowest part of sampling from a random model).
SMALL = ["prompts.limit=6", "shards.size=2", "generate.num_samples=3", "generate.max_new_tokens=5",
         "generate.top_p=1.0", "generate.batch_size=4", "binarize.test_size=1", "device=cpu"]  # fmt: skip


def tiny_llama_config(**extra) -> AutoConfig:
    """A 1-layer, 16-wide Llama with the Llama 3 vocabulary and special ids."""
    fields = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "num_key_value_heads": 1, "vocab_size": 128256, "bos_token_id": 128000, "eos_token_id": 128009,
              "tie_word_embeddings": True}  # fmt: skip
    return AutoConfig.for_model("llama", **fields, **extra)


def save_model(path: Path, model) -> Path:
    model.save_pretrained(path)
    load_tokenizer("llama3").save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def policy_dir(tmp_path_factory) -> Path:
    """A random 1-layer Llama causal LM with the bundled Llama 3 tokenizer (and its chat template)."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_llama_config())
    return save_model(tmp_path_factory.mktemp("policy"), model)


@pytest.fixture(scope="session")
def reward_dir(tmp_path_factory) -> Path:
    """A random 1-layer ``LlamaForSequenceClassification`` (num_labels=1) reward model."""
    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_config(tiny_llama_config(num_labels=1, pad_token_id=PAD))
    with torch.no_grad():
        model.score.weight.mul_(50.0)  # spread the scores so that ties are not an accident of rounding
    return save_model(tmp_path_factory.mktemp("reward"), model)


@pytest.fixture(scope="session")
def flat_reward_dir(tmp_path_factory) -> Path:
    """A reward model whose score head is zero: every response scores exactly 0, so every prompt is a tie."""
    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_config(tiny_llama_config(num_labels=1, pad_token_id=PAD))
    with torch.no_grad():
        model.score.weight.zero_()
    return save_model(tmp_path_factory.mktemp("flat_reward"), model)


def compose_sample(output_dir: Path, overrides: list[str] = ()) -> DictConfig:
    """The real ``conf/sample.yaml`` composed with ``output_dir`` and ``overrides``."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("sample", overrides=[f"output_dir={output_dir}", *overrides])


def pipeline_overrides(policy: Path, reward: Path, extra: list[str] = ()) -> list[str]:
    return ["model=hf", f"model.name_or_path={policy}", f"reward_model.name_or_path={reward}", *SMALL, *extra]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
