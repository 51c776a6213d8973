"""LoRA and QLoRA adapters (peft) on the policy: checking the ``peft`` settings, wrapping the built policy, the base
model as its own reference (``adapters_disabled``), and the merged or adapter-only Hugging Face export.

With adapters the policy is a ``peft.PeftModelForCausalLM``. Its ``config``, ``get_decoder()``, ``lm_head`` and
``_no_split_modules`` resolve to the wrapped causal LM's (peft forwards unknown attributes), so the labelled-only
head, FSDP2 sharding and the optimizer (trainable parameters only) work unchanged on it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from simpo.core.value_checks import check_number, check_one_of, check_positive_int
from simpo.errors import UserError
from simpo.models.checkpointing import checkpointing_kwargs

METHODS = ("lora", "qlora")
EXPORTS = ("merged", "adapter")
ADAPTER_CONFIG = "adapter_config.json"  # what marks a directory as an adapter-only export
ADAPTER = "default"  # peft's name of the (single) adapter
LORA_TYPES = ("Linear", "Conv1D")  # layer classes LoRA adapts here (by class name: transformers' Conv1D, bnb's 4-bit)


@dataclass(frozen=True)
class AdapterSettings:
    """The checked ``peft`` config group (see ``conf/peft/lora.yaml`` for each key).

    Attributes:
        method: ``lora`` (full-precision frozen base) or ``qlora`` (base in 4-bit NF4).
        r, alpha, dropout: LoRA rank, scale numerator (the update is scaled by ``alpha / r``) and input dropout.
        target_modules: module names (last name component) that get adapters; ``None`` = every linear projection
            inside the decoder layers.
        modules_to_save: modules trained in full (and saved) beside the adapters, e.g. ``[lm_head]``.
        export: what ``hf/`` holds at the end: the ``merged`` model or the ``adapter`` alone.
    """

    method: str = "lora"
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None
    modules_to_save: tuple[str, ...] | None = None
    export: str = "merged"

    @property
    def quantized(self) -> bool:
        return self.method == "qlora"


def _names(key: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not all(isinstance(v, str) and v for v in value) or not value:
        raise UserError(f"{key} must be a non-empty list of module names (e.g. [q_proj, v_proj]) or null: {value!r}")
    return tuple(value)


def check_adapter_settings(
    peft: dict[str, Any], name_or_path: str | None, sharded: bool, accelerator: str = "auto"
) -> AdapterSettings:
    """Check the ``peft`` group before anything is built or written.

    Args:
        peft: the resolved ``peft`` config group.
        name_or_path: ``model.name_or_path`` (``None``: a random-initialised base).
        sharded: the run uses ``strategy=fsdp``.
        accelerator: ``trainer.accelerator``.

    Raises:
        ValueError: naming the key: a bad value, ``peft=qlora`` without a CUDA GPU, without pretrained weights or
            under FSDP, ``peft.export=adapter`` of a random-initialised base (the adapter could be loaded onto
            nothing), an unknown key.
    """
    known = set(AdapterSettings.__dataclass_fields__)
    unknown = sorted(set(peft) - known)
    if unknown:
        raise UserError(f"peft.{unknown[0]} is not a setting of the peft group; the keys are {sorted(known)}")
    settings = AdapterSettings(
        method=check_one_of("peft.method", peft.get("method", "lora"), METHODS),
        r=check_positive_int("peft.r", peft.get("r", 16)),  # type: ignore[arg-type]
        alpha=check_number("peft.alpha", peft.get("alpha", 32), "a number > 0", lambda v: v > 0),  # type: ignore[arg-type]
        dropout=check_number("peft.dropout", peft.get("dropout", 0.0), "in [0, 1)", lambda v: 0 <= v < 1),  # type: ignore[arg-type]
        target_modules=_names("peft.target_modules", peft.get("target_modules")),
        modules_to_save=_names("peft.modules_to_save", peft.get("modules_to_save")),
        export=check_one_of("peft.export", peft.get("export", "merged"), EXPORTS),
    )
    if settings.export == "adapter" and name_or_path is None:
        raise UserError(
            "peft.export=adapter writes the adapter alone, to be loaded onto its base model, but this base is "
            "random-initialised (model.name_or_path=null) and exists nowhere else: use peft.export=merged"
        )
    if settings.quantized:
        if not torch.cuda.is_available() or accelerator == "cpu":
            raise UserError(
                "peft=qlora keeps the base weights in 4 bits with bitsandbytes, which needs a CUDA GPU and none is "
                "in use here: use peft=lora on the CPU"
            )
        if name_or_path is None:
            raise UserError("peft=qlora quantises pretrained weights: set model.name_or_path (or use peft=lora)")
        if sharded:
            raise UserError("peft=qlora runs with strategy=single or strategy=ddp, not strategy=fsdp (use peft=lora)")
    return settings


def quantized_loading(settings: AdapterSettings | None) -> dict[str, Any]:
    """Extra ``from_pretrained`` arguments that load the base in 4 bits for QLoRA (bitsandbytes NF4 with double
    quantisation and bf16 compute, on this process's GPU); ``{}`` otherwise."""
    if settings is None or not settings.quantized:
        return {}
    from transformers import BitsAndBytesConfig  # bitsandbytes itself is imported by transformers on use (GPU only)

    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    return {"quantization_config": config, "device_map": {"": int(os.environ.get("LOCAL_RANK", 0))}}


def _decoder_layers(policy: nn.Module) -> list[nn.Module]:
    names = set(getattr(policy, "_no_split_modules", None) or [])
    return [m for m in policy.modules() if type(m).__name__ in names]


def _adaptable(module: nn.Module) -> bool:
    return any(type(module).__name__.startswith(kind) for kind in LORA_TYPES) or isinstance(module, nn.Linear)


def default_target_modules(policy: PreTrainedModel) -> tuple[str, ...]:
    """The names (last component) of every linear projection inside the decoder layers, e.g. Llama's
    ``q_proj k_proj v_proj o_proj gate_proj up_proj down_proj``.

    Raises:
        ValueError: the architecture names no decoder layer (``_no_split_modules``) or its layers hold no layer
            that LoRA adapts: peft is not supported for it here (names ``peft`` and the architecture).
    """
    layers = _decoder_layers(policy)
    found = sorted({name.rsplit(".", 1)[-1] for layer in layers for name, m in layer.named_modules() if _adaptable(m)})
    if not found:
        kind = getattr(policy.config, "model_type", type(policy).__name__)
        why = "its decoder layers hold no linear layer to adapt" if layers else "it names no decoder layer"
        raise UserError(
            f"peft: the architecture {kind!r} ({type(policy).__name__}) is not supported ({why}): train it without "
            "adapters (peft=null)"
        )
    return tuple(found)


def _check_targets(policy: PreTrainedModel, targets: tuple[str, ...], rank: int, chunked_head: bool) -> None:
    matched = {name.rsplit(".", 1)[-1]: m for name, m in policy.named_modules() if name.rsplit(".", 1)[-1] in targets}
    head = policy.get_output_embeddings()
    head_names = sorted(name for name, m in matched.items() if m is head)
    if head_names and chunked_head:
        raise UserError(
            f"peft.target_modules: {head_names[0]} is the output projection, which the labelled-only head "
            "(model.chunk_size) multiplies by its weight directly: a LoRA adapter on it would never train. Train it "
            f"in full with peft.modules_to_save=[{head_names[0]}], leave it out of peft.target_modules, or use full "
            "logits (model.chunk_size=null)"
        )
    missing = [t for t in targets if t not in matched]
    if missing:
        available = sorted({n.rsplit(".", 1)[-1] for n, m in policy.named_modules() if _adaptable(m) and n})
        raise UserError(
            f"peft.target_modules: {missing} match no module of {type(policy).__name__}; its linear layers are "
            f"{available}"
        )
    wrong = sorted(name for name, m in matched.items() if not _adaptable(m))
    if wrong:
        raise UserError(
            f"peft.target_modules: {wrong} are not linear layers LoRA can adapt here "
            "(train embeddings or norms in full with peft.modules_to_save)"
        )
    sizes = {n: (m.in_features, m.out_features) for n, m in matched.items() if hasattr(m, "in_features")}
    if sizes:
        name, (fan_in, fan_out) = min(sizes.items(), key=lambda item: min(item[1]))
        if rank > min(fan_in, fan_out):
            raise UserError(
                f"peft.r={rank} is above the smaller dimension of {name} ({fan_in} x {fan_out}): a rank above "
                f"{min(fan_in, fan_out)} adds parameters but no capacity (the update's rank cannot exceed it). Set "
                f"peft.r <= {min(fan_in, fan_out)}"
            )


def apply_adapters(
    policy: PreTrainedModel,
    settings: AdapterSettings,
    gradient_checkpointing: bool | str = False,
    chunked_head: bool = True,
) -> nn.Module:
    """Freeze ``policy`` and wrap it with LoRA adapters (``peft.get_peft_model``); returns the ``PeftModel``.

    The adapters' ``lora_B`` start at zero, so the wrapped policy first computes exactly the base model. The
    random ``lora_A`` initialisation draws from the global RNG (seeded runs are reproducible).

    Args:
        chunked_head: the run projects onto the vocabulary with the labelled-only head (``model.chunk_size`` set),
            which uses the output projection's weight directly: an adapter on it is refused.

    Raises:
        ValueError: from ``default_target_modules`` / unmatched or unsupported ``peft.target_modules`` (the output
            projection under the chunked head), ``peft.modules_to_save``, or a ``peft.r`` above the smaller dimension
            of a targeted layer.
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    targets = settings.target_modules or default_target_modules(policy)
    _check_targets(policy, targets, settings.r, chunked_head)
    names = {name.rsplit(".", 1)[-1] for name, _ in policy.named_modules()}
    missing = [m for m in settings.modules_to_save or () if m not in names]
    if missing:
        raise UserError(f"peft.modules_to_save: {missing} match no module of {type(policy).__name__}")
    if settings.quantized:
        prepare_model_for_kbit_training(
            policy,
            use_gradient_checkpointing=bool(gradient_checkpointing),
            gradient_checkpointing_kwargs=checkpointing_kwargs(gradient_checkpointing),
        )
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(targets),
        modules_to_save=list(settings.modules_to_save) if settings.modules_to_save else None,
    )
    return get_peft_model(policy, config)


def is_adapted(policy: nn.Module) -> bool:
    """Whether ``policy`` carries peft adapters."""
    from peft import PeftModel

    return isinstance(policy, PeftModel)


@contextlib.contextmanager
def adapters_disabled(policy: nn.Module) -> Iterator[None]:
    """Run the policy as its frozen base model inside the block: every LoRA update and every
    ``modules_to_save`` copy is bypassed, so the outputs are the base model's (the reference of the objectives
    that need one, ``reference=adapter_off``, with no second copy in memory). Re-enabled on exit, also on error.

    Raises:
        ValueError: ``policy`` has no adapters (names ``peft``).
    """
    if not is_adapted(policy):
        raise UserError("reference=adapter_off needs a policy with adapters: set peft=lora or peft=qlora")
    with policy.disable_adapter():  # type: ignore[operator]
        yield


def trainable_names(module: nn.Module, prefix: str = "") -> set[str]:
    """The state-dict names (with ``prefix``) of the parameters of ``module`` that require gradients."""
    return {f"{prefix}{name}" for name, param in module.named_parameters() if param.requires_grad}


def _lora_layers(policy: nn.Module) -> dict[str, nn.Module]:
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in policy.named_modules() if isinstance(m, LoraLayer)}


def _quantized_weights(policy: nn.Module) -> dict[str, torch.Tensor]:
    """``{module name: dequantised weight}`` of the 4-bit linear layers (QLoRA); empty for a full-precision base."""
    from peft.utils.integrations import dequantize_module_weight

    found = {}
    for name, module in policy.named_modules():
        weight = getattr(module, "weight", None)
        if weight is not None and getattr(weight, "quant_state", None) is not None:
            found[name] = dequantize_module_weight(module).detach().to("cpu", torch.float32)
    return found


def merged_state_dict(policy: nn.Module, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The weights of the base model with every adapter merged in: ``W + (alpha / r) B A`` for each adapted layer,
    the trained copy of each ``modules_to_save`` module, and the base's own names (what ``from_pretrained`` reads).

    Args:
        policy: the ``PeftModel``.
        state: its full state dict (``simpo.training.fsdp.gather_full_state_dict`` under FSDP); ``None`` = its own.
    """
    state = dict(policy.state_dict() if state is None else state)
    prefix = "base_model.model."
    dequantized = _quantized_weights(policy)
    if dequantized:  # drop bitsandbytes' quantisation state (weight.absmax, ...), keep the full-precision weights
        state = {k: v for k, v in state.items() if k.rsplit(".weight.", 1)[0] not in dequantized}
        state.update({f"{name}.weight": weight for name, weight in dequantized.items()})
    for name, layer in _lora_layers(policy).items():
        base = f"{name}.base_layer.weight"
        a, b = state[f"{name}.lora_A.{ADAPTER}.weight"].float(), state[f"{name}.lora_B.{ADAPTER}.weight"].float()
        delta = layer.scaling[ADAPTER] * (b @ a)  # (out, in)
        if getattr(layer, "fan_in_fan_out", False):
            delta = delta.T
        state[base] = (state[base].float() + delta.to(state[base].device)).to(state[base].dtype)
    merged = {}
    for key, value in state.items():
        if ".lora_" in key or ".original_module." in key or not isinstance(value, torch.Tensor):
            continue
        name = key.replace(".base_layer.", ".").replace(f".modules_to_save.{ADAPTER}.", ".")
        merged[name.removeprefix(prefix)] = value
    return merged


def save_export(
    policy: nn.Module, directory: Path, state: dict[str, torch.Tensor] | None, export: str, max_shard_size: str
) -> None:
    """Write the adapted policy to ``directory``: the merged model (loads with ``from_pretrained``) or, with
    ``export='adapter'``, the adapter alone (``adapter_config.json`` + weights; loads with peft onto its base)."""
    if export == "adapter":
        policy.save_pretrained(directory, state_dict=state, save_embedding_layers=False)  # type: ignore[operator]
        return
    base = policy.get_base_model()  # type: ignore[operator]
    quantization = getattr(base.config, "quantization_config", None)
    if quantization is not None:  # the merged weights are full precision
        del base.config.quantization_config
    try:
        base.save_pretrained(directory, state_dict=merged_state_dict(policy, state), max_shard_size=max_shard_size)
    finally:
        if quantization is not None:
            base.config.quantization_config = quantization


def is_adapter_dir(path: str | Path | None) -> bool:
    """Whether ``path`` is a local adapter-only export (it holds ``adapter_config.json``)."""
    return path is not None and (Path(str(path)).expanduser() / ADAPTER_CONFIG).is_file()


def adapter_base(path: str | Path) -> str:
    """The base model an adapter-only export was trained on (``base_model_name_or_path``).

    Raises:
        ValueError: the adapter names no base (names ``model.name_or_path``).
    """
    base = json.loads((Path(str(path)).expanduser() / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not base:
        raise UserError(f"model.name_or_path={path}: {ADAPTER_CONFIG} names no base model (base_model_name_or_path)")
    return base


def merge_saved_adapter(base: PreTrainedModel, path: str | Path) -> PreTrainedModel:
    """``base`` with the adapter saved in ``path`` loaded and merged into its weights (a plain model again)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(path)).merge_and_unload()
