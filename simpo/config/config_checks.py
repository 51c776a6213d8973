"""Check a composed training config before anything is built or written: each bad value is named by its key.

Hydra turns ``optimizer.lr=abc`` into the string ``"abc"`` and ``trainer.max_steps=0`` into a valid-looking
integer; without these checks such values fail deep inside a library (or, worse, succeed and train nothing) after
the run directory has been written. A key is checked in one place: where its rule is defined (``RULES`` takes the
rule of ``model.dtype`` from the policy builder, ...) or where its value first becomes an object, which happens
before anything is written too (the objective checks the ``loss`` keys, ``PreferenceDataModule`` the ``data`` keys).
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from simpo.core.chunked_logprobs import CHUNK_SIZE_RULE, HEAD_BACKWARD_RULE
from simpo.core.value_checks import SEED_RULE, Rule, is_integer, is_number
from simpo.errors import ConfigError
from simpo.models.checkpointing import CHECKPOINTING_RULE
from simpo.models.policy import DTYPE_RULE
from simpo.training.optim import IMPLEMENTATION_RULE, WARMUP_RATIO_RULE

__all__ = ["RULES", "ConfigError", "check_train_config"]


PRECISIONS = {"32-true", "32", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64-true", "64"}
# key -> (predicate, what the key must be)
RULES: dict[str, Rule] = {
    "seed": SEED_RULE,
    "optimizer.lr": (lambda v: is_number(v) and v > 0, "a positive number"),
    "optimizer.weight_decay": (lambda v: is_number(v) and v >= 0, "a number >= 0"),
    "optimizer.warmup_ratio": WARMUP_RATIO_RULE,
    "optimizer.eps": (lambda v: is_number(v) and v > 0, "a positive number"),
    "optimizer.implementation": IMPLEMENTATION_RULE,
    "optimizer.betas": (
        lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(is_number(b) and 0 <= b < 1 for b in v),
        "two numbers in [0, 1), e.g. [0.9, 0.999]",
    ),
    "trainer.max_steps": (lambda v: is_integer(v) and (v == -1 or v > 0), "-1 (no limit) or a positive integer"),
    "trainer.max_epochs": (lambda v: v is None or (is_integer(v) and (v == -1 or v > 0)), "-1, null or >= 1"),
    "trainer.accumulate_grad_batches": (lambda v: is_integer(v) and v >= 1, "an integer >= 1"),
    "trainer.log_every_n_steps": (lambda v: is_integer(v) and v >= 1, "an integer >= 1"),
    "trainer.gradient_clip_val": (lambda v: v is None or (is_number(v) and v > 0), "null or a positive number"),
    "model.chunk_size": CHUNK_SIZE_RULE,
    "model.dtype": DTYPE_RULE,
    "model.head_backward": HEAD_BACKWARD_RULE,
    "model.gradient_checkpointing": CHECKPOINTING_RULE,
    "max_nonfinite_steps": (lambda v: is_integer(v) and v >= 0, "an integer >= 0"),
    "overwrite": (lambda v: isinstance(v, bool), "true or false"),
    "validate_before_training": (lambda v: isinstance(v, bool), "true or false"),
    "trainer.val_check_interval": (lambda v: is_number(v) and v > 0, "a fraction in (0, 1] or a positive batch count"),
    "trainer.precision": (lambda v: str(v) in PRECISIONS, f"one of {sorted(PRECISIONS)}"),
}
# The keys train.py reads from the model group: any other key there (a typo under +model.) would do nothing.
OPTIMIZER_KEYS = {"lr", "weight_decay", "betas", "eps", "warmup_ratio", "implementation"}  # conf/optimizer/adamw.yaml
MODEL_KEYS = {"name_or_path", "tokenizer", "dtype", "attn_implementation", "architecture", "compile", "chunk_size",
              "gradient_checkpointing", "head_backward"}  # fmt: skip
ATTENTION = {"auto", "sdpa", "sdpa_segments", "eager", "flex_attention", "flash_attention_2", "flash_attention_3"}


def check_train_config(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` for the first value of ``RULES`` that is missing its type or range.

    Also refuses settings that would train nothing (``trainer.max_steps=0``, ``trainer.limit_train_batches=0``),
    and an ``optimized_metric_direction`` other than maximize/minimize.

    Keys whose value turns into an object before anything is written are checked there, once: the ``loss`` keys by
    the objective (``train.prepare`` builds it first), the ``data`` keys by ``PreferenceDataModule``, ``ckpt_path``
    by ``simpo.runs.run_dir.plan_run_dir``.
    """
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        hints = {"model.name_or_path": " (model=hf: the hub id or local directory of the pretrained model)"}
        raise ConfigError(f"{missing[0]} must be set: it has no default{hints.get(missing[0], '')}")
    unknown = sorted(set(cfg.get("optimizer") or {}) - OPTIMIZER_KEYS)
    if unknown:
        raise ConfigError(f"optimizer.{unknown[0]} is not a setting of the optimizer (it would do nothing): the "
                          f"settings are {sorted(OPTIMIZER_KEYS)}")  # fmt: skip
    for key, (valid, expected) in RULES.items():
        value = OmegaConf.select(cfg, key, default="<absent>", throw_on_missing=False)
        if value == "<absent>":
            continue
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        if not valid(value):
            trains_nothing = key == "trainer.max_steps" and value == 0
            extra = " (0 steps trains nothing: a run must take at least one optimizer step)" if trains_nothing else ""
            raise ConfigError(f"{key} must be {expected}, not {value!r}{extra}")
    limit = OmegaConf.select(cfg, "trainer.limit_train_batches", default=None)
    if limit is not None and (not is_number(limit) or limit <= 0):
        raise ConfigError(
            f"trainer.limit_train_batches must be null, a fraction in (0, 1] or a batch count >= 1, not {limit!r}"
            " (0 trains nothing)"
        )
    if cfg.get("optimized_metric_direction") not in ("maximize", "minimize"):
        raise ConfigError(
            f"optimized_metric_direction must be maximize or minimize, not {cfg.get('optimized_metric_direction')!r}"
        )
    unknown = sorted(set(cfg.model) - MODEL_KEYS)
    if unknown:
        raise ConfigError(f"model.{unknown[0]} is not a setting of the model group (it would do nothing): "
                          f"the settings are {sorted(MODEL_KEYS)}")  # fmt: skip
    attention = cfg.model.get("attn_implementation")
    if attention not in ATTENTION:
        raise ConfigError(f"model.attn_implementation must be one of {sorted(ATTENTION)}, not {attention!r}")
