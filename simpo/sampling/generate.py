"""The generate stage: k responses per prompt, one seed per sample, written shard by shard.

Sample ``j`` of every prompt in shard ``s`` is drawn with the seed ``shard_seed(seeds[j], s)``, so a shard's rows
depend only on its prompts and the settings: a shard redone after a crash equals the one an uninterrupted run
writes. Each response is matched to its prompt by the prompt's id, never by list position.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from simpo.models.decoding import Decoding
from simpo.sampling.engines import Engine
from simpo.sampling.prompts import Prompt
from simpo.sampling.shards import ShardPlan, ShardStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerateSettings:
    """``generate.*``: the per-sample ``seeds`` (k of them) and the decoding (temperature, top_p, max new tokens,
    stop ids); ``context``: the policy's positions (``max_position_embeddings``; ``None``: unknown), which prompt +
    response should fit."""

    seeds: tuple[int, ...]
    decoding: Decoding
    context: int | None = None


def shard_seed(seed: int, shard: int) -> int:
    """The RNG seed of one sample index (``seed``) in one shard."""
    return (seed * 1_000_003 + shard) % (2**63)


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, generation_eos: int | list[int] | None) -> tuple[int, ...]:
    """The tokenizer's EOS and every EOS id of the model's generation config (Llama 3: 128001 and 128009)."""
    extra = generation_eos if isinstance(generation_eos, list) else [generation_eos]
    ids = [tokenizer.eos_token_id, *extra]
    return tuple(dict.fromkeys(int(i) for i in ids if i is not None))


class Throughput:
    """A progress bar over responses that shows the generated tokens per second."""

    def __init__(self, total: int, desc: str, unit: str = "response") -> None:
        self.bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
        self.tokens, self.start = 0, time.perf_counter()

    def update(self, items: int, tokens: int) -> None:
        self.tokens += tokens
        self.bar.update(items)
        self.bar.set_postfix_str(f"{self.tokens / max(time.perf_counter() - self.start, 1e-9):,.0f} tok/s")

    def close(self) -> None:
        self.bar.close()


def generate_shard(
    engine: Engine,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Prompt],
    prompt_ids: list[list[int]],
    settings: GenerateSettings,
    shard: int,
) -> tuple[list[dict], dict[str, float]]:
    """The rows and stats of one shard.

    Returns:
        rows: per prompt ``{prompt_id, turns, prompt_tokens, responses: [{seed, text, tokens, finished}] * k}``;
        stats: ``responses``, ``unfinished`` (cut at max_new_tokens), ``tokens`` (generated, stop tokens included),
            ``seconds``; with a known context, ``prompts_over_context`` (prompts as long as the policy's positions or
            longer) and ``responses_past_context`` (responses that run past them: the policy generated beyond what
            it was trained to see).
    """
    start = time.perf_counter()
    per_seed = [engine.generate(prompt_ids, settings.decoding, shard_seed(seed, shard)) for seed in settings.seeds]
    seconds = time.perf_counter() - start
    rows = []
    for i, prompt in enumerate(prompts):
        responses = [
            {
                "seed": seed,
                "text": tokenizer.decode(samples[i].ids, skip_special_tokens=True).strip(),
                "tokens": len(samples[i].ids),
                "finished": samples[i].finished,
            }
            for seed, samples in zip(settings.seeds, per_seed, strict=True)
        ]
        rows.append({"prompt_id": prompt.prompt_id, "turns": prompt.turns, "prompt_tokens": len(prompt_ids[i]),
                     "responses": responses})  # fmt: skip
    samples = [s for per in per_seed for s in per]
    stats = {
        "responses": len(samples),
        "unfinished": sum(not s.finished for s in samples),
        "tokens": sum(len(s.ids) + s.finished for s in samples),
        "seconds": seconds,
    }
    if settings.context is not None:
        lengths = [len(ids) for ids in prompt_ids]
        stats["prompts_over_context"] = sum(length >= settings.context for length in lengths)
        stats["responses_past_context"] = sum(
            lengths[i] + len(samples[i].ids) > settings.context for samples in per_seed for i in range(len(lengths))
        )
    return rows, stats


def run_generate(
    engine: Engine,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Prompt],
    prompt_ids: dict[int, list[int]],
    settings: GenerateSettings,
    plan: ShardPlan,
    store: ShardStore,
    progress: Throughput | None = None,
) -> int:
    """Generate every shard of this rank that has no file yet; returns the shards written.

    Args:
        prompt_ids: token ids by prompt index, for (at least) the prompts of the shards to do.
    """
    store.remove_stale_temporaries()
    written = 0
    for shard in store.missing(plan.mine()):
        lo, hi = plan.bounds(shard)
        rows, stats = generate_shard(
            engine, tokenizer, prompts[lo:hi], [prompt_ids[i] for i in range(lo, hi)], settings, shard
        )
        store.write(shard, rows, stats)
        written += 1
        log.info("generate: shard %d (%d prompts) written, %.0f tok/s", shard, hi - lo,
                 stats["tokens"] / max(stats["seconds"], 1e-9))  # fmt: skip
    if progress is not None:
        progress.close()
    return written
