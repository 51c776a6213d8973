"""The policy that samples: a Hugging Face model (``model.name_or_path``) or the bundled random-initialised default."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from data.tokenizers import override_chat_template
from simpo.loading.policy_source import build_model_policy, load_model_tokenizer, load_policy


def sampling_policy(
    model_cfg: Any, seed: int, chat_template: str | None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """(model in eval mode, tokenizer with its chat template, name) from a ``conf/model/`` section.

    ``model.name_or_path`` null builds ``model.architecture`` with random weights seeded by ``seed`` (the bundled
    default: a tiny Llama with the bundled Llama 3 tokenizer). ``chat_template`` (``generate.chat_template``)
    replaces the tokenizer's template when set.

    Raises:
        ValueError, FileNotFoundError: a missing or malformed source, NaN/Inf weights (names the key).
    """
    name = model_cfg.name_or_path
    if name is not None:
        policy = load_policy(name, None, model_cfg.tokenizer, model_cfg.dtype, model_cfg.attn_implementation)
        model, tokenizer, short = policy.model, policy.tokenizer, policy.name
    else:
        tokenizer = load_model_tokenizer(None, model_cfg.tokenizer)
        model = build_model_policy(model_cfg, tokenizer, seed=seed).eval()
        short = f"random-{model_cfg.architecture['model_type'] if model_cfg.architecture else 'model'}"
    override_chat_template(tokenizer, chat_template, key="generate.chat_template")
    return model, tokenizer, short
