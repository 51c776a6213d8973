"""Decoding settings per model family and benchmark, as the SimPO authors evaluated (overridable)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from transformers import PretrainedConfig

# FastChat's MT-Bench temperatures by question category.
MT_BENCH_TEMPERATURE = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
                        "reasoning": 0.0, "stem": 0.1, "humanities": 0.1}  # fmt: skip


@dataclass(frozen=True)
class Decoding:
    """How to sample one answer: ``temperature`` 0 means greedy; generation stops at any ``stop_token_ids``."""

    temperature: float
    top_p: float
    max_new_tokens: int
    stop_token_ids: tuple[int, ...] = ()


# AlpacaEval 2 settings of the SimPO evaluation configs (alpaca-eval 0.6.2).
FAMILY_DECODING = {
    "llama3": Decoding(temperature=0.9, top_p=1.0, max_new_tokens=4096, stop_token_ids=(128001, 128009)),
    "mistral-base": Decoding(temperature=0.7, top_p=1.0, max_new_tokens=2048),
    "mistral-instruct": Decoding(temperature=0.5, top_p=1.0, max_new_tokens=2048),
    "default": Decoding(temperature=0.7, top_p=1.0, max_new_tokens=2048),  # not from the authors
}


def model_family(config: PretrainedConfig, name: str) -> str:
    """``llama3`` | ``mistral-base`` | ``mistral-instruct`` | ``default``, from the config and the model's name."""
    if config.model_type == "llama" and config.vocab_size >= 128000:
        return "llama3"
    if config.model_type == "mistral":
        return "mistral-instruct" if "instruct" in name.lower() else "mistral-base"
    return "default"


def decoding_for(
    family: str,
    benchmark: str,
    category: str | None,
    eos_token_id: int | None,
    temperature: float | None = None,
    top_p: float | None = None,
    max_new_tokens: int | None = None,
) -> Decoding:
    """The settings for one question: the family's AlpacaEval settings; Arena-Hard greedy with 4096 new
    tokens; MT-Bench FastChat's per-category temperature with 1024 new tokens; then explicit overrides.
    The tokenizer's EOS always stops generation."""
    base = FAMILY_DECODING[family]
    if benchmark == "arena_hard":
        base = replace(base, temperature=0.0, max_new_tokens=4096)
    elif benchmark == "mt_bench":
        base = replace(base, temperature=MT_BENCH_TEMPERATURE.get(category or "", 0.7), max_new_tokens=1024)
    stops = tuple(dict.fromkeys([*base.stop_token_ids, *([eos_token_id] if eos_token_id is not None else [])]))
    return Decoding(
        temperature=base.temperature if temperature is None else temperature,
        top_p=base.top_p if top_p is None else top_p,
        max_new_tokens=base.max_new_tokens if max_new_tokens is None else max_new_tokens,
        stop_token_ids=stops,
    )
