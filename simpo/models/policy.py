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

from simpo.core.segment_attention import SEGMENT_SDPA
from simpo.core.value_checks import check_rule
from simpo.errors import UserError
from simpo.models.checkpointing import checkpointing_kwargs
from simpo.models.structure import decoder_layer_classes, parameters_on_meta
from simpo.models.weights import refuse_nonfinite

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_RANDOM_INIT_TOKENIZER = "llama3"  # a random-initialised model without model.tokenizer gets this one


def tokenizer_source(tokenizer: str | None, name_or_path: str | None) -> str:
    """Where the tokenizer comes from: ``model.tokenizer`` when set, else the tokenizer of ``model.name_or_path``,
    else (a random-initialised model) the bundled ``llama3``."""
    return tokenizer or name_or_path or DEFAULT_RANDOM_INIT_TOKENIZER


DTYPE_RULE = (lambda v: v in DTYPES, f"one of {sorted(DTYPES)}")  # (valid, expected) of every dtype key


def resolve_dtype(name: str, key: str = "model.dtype") -> torch.dtype:
    """``name`` (float32 | bfloat16 | float16) as a torch dtype: the one check of ``model.dtype`` and the other
    dtype keys (``reward_model.dtype``), the training config check applying the same ``DTYPE_RULE``.

    Raises:
        UserError: naming ``key``.
    """
    return DTYPES[check_rule(key, name, DTYPE_RULE)]


# Smallest learning rate whose AdamW updates (about lr per step) survive rounding when the weights themselves are
# stored in this dtype: a weight of typical size 0.02 has a rounding step of 0.02 * 2**-8 in bfloat16 (8 mantissa
# bits) and 0.02 * 2**-11 in float16, so smaller updates mostly vanish.
LOW_PRECISION_MIN_LR = {"bfloat16": 1e-4, "float16": 1e-5}


def warn_low_precision_weights(dtype: str, lr: float) -> bool:
    """Warn when the weights are stored in 16 bits and ``lr`` is too small for their updates to survive rounding.

    Returns:
        True when it warned.
    """
    floor = LOW_PRECISION_MIN_LR.get(dtype)
    if floor is None or lr >= floor:
        return False
    log.warning(
        "model.dtype=%s stores the weights themselves in 16 bits: with optimizer.lr=%g most AdamW updates are "
        "smaller than the weights' rounding step and are lost. Keep model.dtype=float32 and compute in 16 bits with "
        "trainer.precision=bf16-mixed (fp32 master weights; the recipes' setting)",
        dtype,
        lr,
    )
    return True


def check_tokenizer_matches(
    model_config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase, vocab_rows: int
) -> None:
    """Refuse a tokenizer that cannot belong to the model.

    Args:
        model_config: the model's config (its ``bos_token_id``).
        tokenizer: the tokenizer it is trained with.
        vocab_rows: rows of the model's input embedding.

    Raises:
        ValueError: the tokenizer has more ids than the embedding; covers under 90% of it (a model's vocabulary is at
            most padded, never several times larger); or its BOS id differs from the model's. Names ``model.tokenizer``.
    """
    size = len(tokenizer)
    fix = "use the model's own tokenizer (model.tokenizer=null) or one made for it"
    if size > vocab_rows:
        raise UserError(f"model.tokenizer has {size} tokens but the model's embedding only {vocab_rows} rows: {fix}")
    if size < 0.9 * vocab_rows:
        raise UserError(
            f"model.tokenizer has {size} tokens but the model's embedding {vocab_rows} rows: it is another model's "
            f"tokenizer (its ids would mean different words): {fix}"
        )
    model_bos, tokenizer_bos = getattr(model_config, "bos_token_id", None), tokenizer.bos_token_id
    if isinstance(model_bos, int) and tokenizer_bos is not None and model_bos != tokenizer_bos:
        raise UserError(
            f"model.tokenizer's BOS token is id {tokenizer_bos} ({tokenizer.bos_token!r}) but the model's config says "
            f"bos_token_id={model_bos}: {fix}"
        )


# Layouts whose rows hold several sequences or pairs (``data/collate.py``).
PACKED_LAYOUTS = frozenset({"packed", "shared_prompt_packed"})
# Architectures that transformers runs without SDPA (Gemma 2: its attention-logit soft cap).
NO_SDPA_MODEL_TYPES = frozenset({"gemma2"})


def resolve_attn_implementation(
    requested: str, dtype: torch.dtype, model_type: str | None = None, layout: str = "padded"
) -> str:
    """The attention kernel to use; ``auto`` picks by device, batch layout and architecture:

    - padded batches: flash_attention_2 when it can run (the ``flash_attn`` package, CUDA, 16-bit weights);
    - packed / shared-prompt batches on CUDA: flex_attention (block-sparse masks, torch's own kernel);
    - packed rows elsewhere: sdpa_segments (SDPA segment by segment, ``simpo.core.segment_attention``), whose cost
      follows the packed sequences' lengths, not the row's;
    - otherwise sdpa, or eager for architectures without SDPA support (Gemma 2).
    """
    if requested != "auto":
        return requested
    cuda = torch.cuda.is_available()
    if layout == "padded":
        if importlib.util.find_spec("flash_attn") is not None and cuda and dtype in (torch.bfloat16, torch.float16):
            return "flash_attention_2"
    elif cuda:
        return "flex_attention"
    if model_type in NO_SDPA_MODEL_TYPES:
        return "eager"
    return SEGMENT_SDPA if layout in PACKED_LAYOUTS else "sdpa"


def check_context_length(max_length: int, config: PretrainedConfig) -> None:
    """Refuse sequences longer than the model's positions (``max_position_embeddings``): positions past it were
    never trained (or are not there at all).

    Raises:
        UserError: naming ``data.max_length`` and the model's value.
    """
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    context = getattr(config, "max_position_embeddings", None)
    if isinstance(context, int) and max_length > context:
        raise UserError(
            f"data.max_length={max_length} is longer than the model's context (max_position_embeddings={context} in "
            f"its config; model.architecture.max_position_embeddings for a random init): set data.max_length <= "
            f"{context}"
        )


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
    gradient_checkpointing: bool | str = False,
    compile_layers: bool = False,
    empty_init: bool = False,
    layout: str = "padded",
    load_kwargs: dict[str, Any] | None = None,
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
        gradient_checkpointing: recompute each decoder layer's activations in the backward pass: ``True`` all of
            them, ``"selective"`` the element-wise ones only (``simpo.models.checkpointing``), ``False`` none.
        compile_layers: ``torch.compile`` each decoder layer (the classes of ``_no_split_modules``).
        layout: the batch layout (``data.layout``), which ``attn_implementation=auto`` takes into account.
        empty_init: create the parameters on the meta device (no memory, buffers real) for FSDP to shard
            and fill later (``simpo.training.fsdp.materialize``); the weights are then neither loaded nor initialised.
        load_kwargs: more ``from_pretrained`` arguments (QLoRA's ``quantization_config`` and ``device_map``).
    """
    torch_dtype = resolve_dtype(dtype)
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
        raise UserError("set model.name_or_path (hub id or local dir) or model.architecture (random init)")
    zero_dropout_fields(config)
    attn = resolve_attn_implementation(attn_implementation, torch_dtype, config.model_type, layout)
    if empty_init:
        with parameters_on_meta():
            model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype, attn_implementation=attn)
    elif name_or_path is not None:
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path, config=config, dtype=torch_dtype, attn_implementation=attn, **(load_kwargs or {})
        )
        refuse_nonfinite(model, f"model.name_or_path={name_or_path}")
    else:
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype, attn_implementation=attn)
    check_tokenizer_matches(model.config, tokenizer, model.get_input_embeddings().num_embeddings)
    disable_dropout(model)
    # from_pretrained returns the model in eval mode and Lightning no longer switches it to train mode; the
    # transformers layers only checkpoint activations in train mode (dropout is off either way).
    model.train()
    if gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpointing_kwargs(gradient_checkpointing))
        model.config.use_cache = False
    if compile_layers:
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
