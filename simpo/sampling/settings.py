"""The keys of ``conf/sample.yaml`` checked before anything is loaded or written; each error names its key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig

from simpo.core.device import resolve_device
from simpo.core.value_checks import check_number, check_one_of, check_positive_int, check_seed, is_integer
from simpo.errors import UserError
from simpo.models.decoding import Decoding
from simpo.models.policy import resolve_dtype
from simpo.sampling.engines import BACKENDS

STAGES = ("generate", "score", "binarize")


def check_stages(stages: Any) -> tuple[str, ...]:
    """``stages``: a non-empty list of generate / score / binarize; returned in pipeline order."""
    if isinstance(stages, str) or not stages or any(s not in STAGES for s in stages):
        raise UserError(f"stages must be a non-empty list of {list(STAGES)}, not {stages!r}")
    return tuple(s for s in STAGES if s in stages)


def check_seeds(seeds: Any, num_samples: int) -> tuple[int, ...]:
    """The first ``num_samples`` of ``generate.seeds`` (distinct integers, one per sample)."""
    if isinstance(seeds, str) or not isinstance(seeds, Sequence) or not all(is_integer(s) and s >= 0 for s in seeds):
        raise UserError(f"generate.seeds must be a list of integers >= 0 (one per sample), not {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"generate.seeds must be distinct (equal seeds give equal samples), not {list(seeds)}")
    if len(seeds) < num_samples:
        raise UserError(
            f"generate.num_samples={num_samples} needs as many generate.seeds (one per sample); got {len(seeds)}: "
            f"{list(seeds)}"
        )
    return tuple(int(s) for s in seeds[:num_samples])


def check_test_size(value: Any) -> float | int:
    """``binarize.test_size``: a fraction in (0, 1) or a positive count of pairs."""
    if not ((isinstance(value, float) and 0 < value < 1) or (is_integer(value) and value >= 1)):
        raise UserError(f"binarize.test_size must be a fraction in (0, 1) or a positive pair count, not {value!r}")
    return value


def check_sample_config(cfg: DictConfig) -> tuple[str, ...]:
    """Check every key of ``cfg`` whose value alone can be wrong; returns the stages to run in order.

    Raises:
        ValueError: naming the key and the value (a reward model is required when the score stage runs).
    """
    stages = check_stages(cfg.stages)
    if not isinstance(cfg.output_dir, str) or not cfg.output_dir.strip():
        raise UserError(f"output_dir must be a directory path, not {cfg.output_dir!r}")
    check_seed("seed", cfg.seed)
    resolve_device(cfg.device)
    p = cfg.prompts
    for key in ("dataset", "split", "column"):
        if not isinstance(p[key], str) or not p[key].strip():
            raise UserError(f"prompts.{key} must be a non-empty string, not {p[key]!r}")
    check_positive_int("prompts.limit", p.limit, nullable=True)
    check_positive_int("shards.size", cfg.shards.size)
    g = cfg.generate
    check_one_of("generate.backend", g.backend, BACKENDS)
    check_positive_int("generate.num_samples", g.num_samples)
    if g.num_samples < 2:
        raise UserError(f"generate.num_samples must be at least 2 (a pair needs two responses), not {g.num_samples}")
    check_seeds(g.seeds, g.num_samples)
    check_number("generate.temperature", g.temperature, "a number >= 0 (0: greedy)", lambda x: x >= 0)
    check_number("generate.top_p", g.top_p, "a number in (0, 1]", lambda x: 0 < x <= 1)
    check_positive_int("generate.max_new_tokens", g.max_new_tokens)
    check_positive_int("generate.batch_size", g.batch_size)
    resolve_dtype(cfg.model.dtype)
    r = cfg.reward_model
    if "score" in stages and not r.name_or_path:
        raise UserError(
            "reward_model.name_or_path must be set for the score stage: an AutoModelForSequenceClassification "
            "directory or hub id (e.g. RLHFlow/ArmoRM-Llama3-8B-v0.1 with reward_model.trust_remote_code=true)"
        )
    if not isinstance(r.trust_remote_code, bool):
        raise UserError(f"reward_model.trust_remote_code must be true or false, not {r.trust_remote_code!r}")
    resolve_dtype(r.dtype, key="reward_model.dtype")
    check_positive_int("reward_model.batch_size", r.batch_size)
    check_positive_int("reward_model.max_length", r.max_length)
    check_number("binarize.min_margin", cfg.binarize.min_margin, "a number >= 0 (0: drop ties only)", lambda x: x >= 0)
    check_test_size(cfg.binarize.test_size)
    return stages


def decoding(cfg: DictConfig, stop_token_ids: tuple[int, ...]) -> Decoding:
    """The decoding of ``generate.*``."""
    g = cfg.generate
    return Decoding(float(g.temperature), float(g.top_p), int(g.max_new_tokens), stop_token_ids)
