"""Load the policy to evaluate: a Hugging Face model (an ``hf/`` export, a local dir, a hub id) or a
Lightning checkpoint of this project (its training config rebuilds the model, tokenizer and loss)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from data.tokenizers import load_tokenizer, override_chat_template
from simpo.policy import build_policy


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


def load_policy(
    name_or_path: str | None,
    ckpt_path: str | None,
    tokenizer: str | None = None,
    dtype: str = "float32",
    attn_implementation: str = "auto",
) -> LoadedPolicy:
    """Load from ``ckpt_path`` (a Lightning checkpoint of ``train.py``) or ``name_or_path``; exactly one.

    Raises:
        ValueError: when neither or both are given, or the checkpoint was not written by this project.
    """
    if (name_or_path is None) == (ckpt_path is None):
        raise ValueError("set exactly one of model.name_or_path (an hf/ export, local dir or hub id) or ckpt_path")
    if ckpt_path is not None:
        return _from_checkpoint(Path(ckpt_path), dtype, attn_implementation)
    tok = load_tokenizer(tokenizer or name_or_path)
    model = build_policy(tok, name_or_path=name_or_path, dtype=dtype, attn_implementation=attn_implementation)
    return LoadedPolicy(model.eval(), tok, _short_name(name_or_path), None)


def _from_checkpoint(path: Path, dtype: str, attn_implementation: str) -> LoadedPolicy:
    if path.is_dir():
        raise ValueError(
            f"ckpt_path={path} is a sharded (FSDP) checkpoint directory: evaluate the run's Hugging Face export "
            "instead (model.name_or_path=<run dir>/hf)"
        )
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    config = checkpoint.get("hyper_parameters", {}).get("config")
    if config is None:
        raise ValueError(f"ckpt_path={path} holds no training config: was it written by this project's train.py?")
    model_cfg = config["model"]
    tok = load_tokenizer(model_cfg["tokenizer"] or model_cfg["name_or_path"])
    override_chat_template(tok, config["data"].get("chat_template"))
    model = build_policy(
        tok,
        name_or_path=model_cfg["name_or_path"],
        architecture=model_cfg["architecture"] if model_cfg["name_or_path"] is None else None,
        dtype=dtype,
        attn_implementation=attn_implementation,
    )
    state = {k.removeprefix("policy."): v for k, v in checkpoint["state_dict"].items() if k.startswith("policy.")}
    if not state:
        raise ValueError(f"ckpt_path={path} holds no policy weights")
    _load_strict(model, state)
    name = f"{_short_name(str(path.parent.parent))}-step{checkpoint['global_step']}"
    return LoadedPolicy(model.eval(), tok, name, config)


def _load_strict(model: PreTrainedModel, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ValueError(f"checkpoint does not match the model: missing {missing}, unexpected {unexpected}")


def _short_name(name_or_path: str) -> str:
    path = Path(name_or_path.rstrip("/"))
    return path.parent.name if path.name == "hf" else path.name
