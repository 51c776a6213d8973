"""Load the policy to evaluate: a Hugging Face model (an ``hf/`` export, a local dir, a hub id) or a
Lightning checkpoint of this project (its training config rebuilds the model, tokenizer and loss)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from data.tokenizers import BUNDLED, load_tokenizer, override_chat_template
from simpo.errors import MissingFileError, UserError
from simpo.io import read_torch_file
from simpo.models.adapters import adapter_base, is_adapter_dir, merge_saved_adapter
from simpo.models.policy import build_policy, tokenizer_source
from simpo.models.pretrained_source import check_pretrained_source, check_tokenizer_files
from simpo.models.weights import refuse_nonfinite


@dataclass
class LoadedPolicy:
    """A policy ready for evaluation.

    Attributes:
        model: the causal LM in eval mode.
        tokenizer: its tokenizer (with the chat template used in training when known).
        name: a short name for reports and answer files.
        training_config: the run's resolved training config (checkpoints only), else ``None``.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    training_config: dict[str, Any] | None


def load_model_tokenizer(name_or_path: str | None, tokenizer: str | None, stored: str = "") -> PreTrainedTokenizerBase:
    """The tokenizer of a ``model`` section: ``model.tokenizer`` when set, else ``model.name_or_path``'s, else (random
    initialisation) the bundled default; the one place train, evaluate and sample turn these keys into a tokenizer.

    Every source is checked before anything loads: each exists (a local directory, a hub id or a bundled name for
    the tokenizer) and a tokenizer directory holds tokenizer files. ``stored`` follows the key in messages when the
    keys come from a checkpoint's training config (`` (in the training config of ckpt_path=...)``).

    Raises:
        FileNotFoundError, ValueError: naming the key whose value is wrong.
    """
    key = f"{'model.tokenizer' if tokenizer or name_or_path is None else 'model.name_or_path'}{stored}"
    source = tokenizer_source(tokenizer, name_or_path)
    check_pretrained_source(source, key, bundled=tuple(BUNDLED))
    if name_or_path is not None:
        check_pretrained_source(name_or_path, f"model.name_or_path{stored}")
    check_tokenizer_files(source, key)
    return load_tokenizer(source)


def build_model_policy(
    model: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, seed: int | None = None, **options: Any
) -> PreTrainedModel:
    """The policy a ``model`` section describes, the one builder that train, evaluate, sample and the reference use:
    ``model.name_or_path``'s pretrained weights, or else ``model.architecture`` random-initialised, with the
    section's ``dtype`` and ``attn_implementation`` and dropout off (``simpo.models.policy.build_policy``).

    Args:
        model: ``name_or_path``, ``architecture``, ``dtype``, ``attn_implementation`` (missing: null, null,
            float32, auto), e.g. a composed ``conf/model`` section or a checkpoint's stored one.
        tokenizer: from ``load_model_tokenizer``.
        seed: when set, the global RNG is seeded with it first (``lightning.seed_everything``), so a random
            initialisation is the one ``train.py`` made with ``seed``; ``None`` leaves the RNG as it is.
        options: ``build_policy``'s other arguments (``layout``, ``gradient_checkpointing``, ``compile_layers``,
            ``empty_init``, ``load_kwargs``).
    """
    if seed is not None:
        L.seed_everything(seed, verbose=False)
    name_or_path = model.get("name_or_path")
    architecture = model.get("architecture") if name_or_path is None else None
    return build_policy(
        tokenizer,
        name_or_path=name_or_path,
        architecture=dict(architecture) if architecture else None,
        dtype=model.get("dtype", "float32"),
        attn_implementation=model.get("attn_implementation", "auto"),
        **options,
    )


def load_policy(
    name_or_path: str | None,
    ckpt_path: str | None,
    tokenizer: str | None = None,
    dtype: str = "float32",
    attn_implementation: str = "auto",
    layout: str = "padded",
) -> LoadedPolicy:
    """Load from ``ckpt_path`` (a Lightning checkpoint of ``train.py``) or ``name_or_path``; exactly one.

    ``layout`` is the batch layout the policy will score (``data.layout`` as chosen), which
    ``attn_implementation=auto`` takes into account (``simpo.models.policy.resolve_attn_implementation``).

    Raises:
        ValueError: when neither or both are given, the checkpoint is incomplete or was not written by this
            project, or the weights hold NaN/Inf (each message names model.name_or_path or ckpt_path).
        FileNotFoundError: a ``ckpt_path`` or local ``name_or_path`` / ``tokenizer`` that does not exist.
    """
    if (name_or_path is None) == (ckpt_path is None):
        raise UserError("set exactly one of model.name_or_path (an hf/ export, local dir or hub id) or ckpt_path")
    if ckpt_path is not None:
        return _from_checkpoint(Path(ckpt_path), dtype, attn_implementation, layout)
    tok = load_model_tokenizer(name_or_path, tokenizer)
    if is_adapter_dir(name_or_path):  # an adapter-only export (peft.export=adapter): merged onto its base here
        base = adapter_base(name_or_path)
        check_pretrained_source(base, f"base_model_name_or_path in {name_or_path}/adapter_config.json")
        section = {"name_or_path": base, "dtype": dtype, "attn_implementation": attn_implementation}
        model = merge_saved_adapter(build_model_policy(section, tok, layout=layout), name_or_path)
        refuse_nonfinite(model, f"model.name_or_path={name_or_path}")  # the base was checked; the adapter not
    else:  # build_model_policy refuses non-finite pretrained weights itself
        section = {"name_or_path": name_or_path, "dtype": dtype, "attn_implementation": attn_implementation}
        model = build_model_policy(section, tok, layout=layout)
    return LoadedPolicy(model.eval(), tok, _short_name(name_or_path), None)


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's contents; errors name ``ckpt_path`` and say what is wrong with the file."""
    if path.is_dir():
        raise UserError(
            f"ckpt_path={path} is a sharded (FSDP) checkpoint directory: evaluate the run's Hugging Face export "
            "instead (model.name_or_path=<run dir>/hf)"
        )
    if not path.is_file():
        raise MissingFileError(f"ckpt_path={path}: no such checkpoint file (relative to {Path.cwd()})")
    checkpoint = read_torch_file(path, "ckpt_path")
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"ckpt_path={path}: {path.name} is not a Lightning checkpoint (no state_dict)")
    return checkpoint


def _from_checkpoint(path: Path, dtype: str, attn_implementation: str, layout: str) -> LoadedPolicy:
    checkpoint = _read_checkpoint(path)
    config = checkpoint.get("hyper_parameters", {}).get("config")
    if config is None:
        raise UserError(f"ckpt_path={path} holds no training config: was it written by this project's train.py?")
    if config.get("peft"):
        raise UserError(
            f"ckpt_path={path} holds only the adapters of a peft run (not the frozen base): evaluate the run's export "
            "instead, model.name_or_path=<run dir>/hf (merged or adapter-only)"
        )
    model_cfg = config["model"]
    stored = f" (in the training config of ckpt_path={path})"
    tok = load_model_tokenizer(model_cfg["name_or_path"], model_cfg.get("tokenizer"), stored)
    override_chat_template(tok, config["data"].get("chat_template"))
    model = build_model_policy({**model_cfg, "dtype": dtype, "attn_implementation": attn_implementation}, tok,
                               layout=layout)
    state = {k.removeprefix("policy."): v for k, v in checkpoint["state_dict"].items() if k.startswith("policy.")}
    if not state:
        raise UserError(f"ckpt_path={path} holds no policy weights")
    _load_strict(model, state, path)
    refuse_nonfinite(model, f"ckpt_path={path}")
    name = f"{_short_name(str(path.parent.parent))}-step{checkpoint['global_step']}"
    return LoadedPolicy(model.eval(), tok, name, config)


def _load_strict(model: PreTrainedModel, state: dict[str, torch.Tensor], path: Path) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise UserError(
            f"ckpt_path={path}: the checkpoint does not match the model of its training config: missing {missing}, "
            f"unexpected {unexpected}"
        )


def _short_name(name_or_path: str) -> str:
    path = Path(name_or_path.rstrip("/"))
    return path.parent.name if path.name == "hf" else path.name
