"""Build the policy: a Hugging Face causal LM, loaded or random-initialised, with dropout disabled."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    """``model.dtype`` (float32 | bfloat16 | float16) as a torch dtype."""
    if name not in DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, not {name!r}")
    return DTYPES[name]


def resolve_attn_implementation(requested: str, dtype: torch.dtype) -> str:
    """The attention kernel to use: ``auto`` picks flash_attention_2 when it can run, else sdpa.

    flash_attention_2 needs the ``flash_attn`` package, a CUDA device and a 16-bit dtype.
    """
    if requested != "auto":
        return requested
    flash_ok = (
        importlib.util.find_spec("flash_attn") is not None
        and torch.cuda.is_available()
        and dtype in (torch.bfloat16, torch.float16)
    )
    return "flash_attention_2" if flash_ok else "sdpa"


def zero_dropout_fields(config: PretrainedConfig) -> None:
    """Set every float ``*dropout*`` field of a Hugging Face config to 0 (before the model is built)."""
    for key, value in config.to_dict().items():
        if "dropout" in key and isinstance(value, float):
            setattr(config, key, 0.0)


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout probability of ``model`` to 0: ``nn.Dropout`` modules, float ``*dropout*``
    attributes that attention modules copy from the config at construction, and the config itself."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        for name, value in vars(module).items():
            if "dropout" in name and isinstance(value, float):
                setattr(module, name, 0.0)
    if isinstance(getattr(model, "config", None), PretrainedConfig):
        zero_dropout_fields(model.config)


def build_policy(
    tokenizer: PreTrainedTokenizerBase,
    name_or_path: str | None = None,
    architecture: dict[str, Any] | None = None,
    dtype: str = "float32",
    attn_implementation: str = "auto",
    gradient_checkpointing: bool = False,
    compile_layers: bool = False,
    empty_init: bool = False,
) -> PreTrainedModel:
    """Load ``name_or_path`` (hub id or local dir), or build ``architecture`` with random weights.

    Args:
        tokenizer: the tokenizer the policy is trained with; a random model gets its vocabulary size and
            special-token ids.
        name_or_path: pretrained weights; ``None`` to random-initialise ``architecture`` instead.
        architecture: a Hugging Face config as a dict (``model_type`` plus its fields), used only when
            ``name_or_path`` is ``None``. Weights follow the global seed.
        dtype: parameter dtype, ``float32`` | ``bfloat16`` | ``float16``.
        attn_implementation: ``auto`` | ``sdpa`` | ``eager`` | ``flash_attention_2`` | ...
        gradient_checkpointing: recompute each decoder layer's activations in the backward pass.
        compile_layers: ``torch.compile`` each decoder layer (the classes of ``_no_split_modules``).
        empty_init: create the parameters on the meta device (no memory, buffers real) for FSDP to shard
            and fill later (``simpo.fsdp.materialize``); the weights are then neither loaded nor initialised.
    """
    torch_dtype = resolve_dtype(dtype)
    attn = resolve_attn_implementation(attn_implementation, torch_dtype)
    if name_or_path is not None:
        config = AutoConfig.from_pretrained(name_or_path)
    elif architecture:
        fields = dict(architecture)
        model_type = fields.pop("model_type")
        fields.setdefault("vocab_size", len(tokenizer))
        fields.setdefault("bos_token_id", tokenizer.bos_token_id)
        fields.setdefault("eos_token_id", tokenizer.eos_token_id)
        fields.setdefault("pad_token_id", tokenizer.pad_token_id)
        config = AutoConfig.for_model(model_type, **fields)
    else:
        raise ValueError("set model.name_or_path (hub id or local dir) or model.architecture (random init)")
    zero_dropout_fields(config)
    if empty_init:
        from simpo.fsdp import parameters_on_meta

        with parameters_on_meta():
            model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype, attn_implementation=attn)
    elif name_or_path is not None:
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path, config=config, dtype=torch_dtype, attn_implementation=attn
        )
    else:
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype, attn_implementation=attn)
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's embedding only "
            f"{model.get_input_embeddings().num_embeddings}: use the model's own tokenizer (model.tokenizer)"
        )
    disable_dropout(model)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if compile_layers:
        from simpo.fsdp import decoder_layer_classes

        layer_types = decoder_layer_classes(model)
        for layer in (m for m in model.modules() if isinstance(m, layer_types)):
            layer.compile()
    log.info(
        "policy: %s, %.1fM parameters, %s, attention=%s",
        type(model).__name__,
        sum(p.numel() for p in model.parameters()) / 1e6,
        torch_dtype,
        attn,
    )
    return model
