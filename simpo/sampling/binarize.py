"""The binarize stage: per prompt, chosen = the highest-scored response, rejected = the lowest; the pairs written in
the UltraFeedback layout with seeded ``train_prefs`` / ``test_prefs`` splits, so ``data.dataset=<output_dir>``
trains on them as they are.

Blank responses are not candidates. A prompt is dropped, and counted under its reason (``DROP_REASONS``), when
fewer than two responses are non-blank, when they are all the same text, when a score is NaN/Inf, when the best and
worst scores tie (``truncated_tie`` when the reward model saw every response cut at ``reward_model.max_length``: the
tie is the truncation's, not the responses'), or when their margin is below ``binarize.min_margin``. Ties are broken
deterministically: among equal best (or worst) scores, the response with the lowest sample index (the seed listed
first) wins.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from data.sources import carve_validation
from simpo.errors import UserError
from simpo.sampling.shards import write_text_atomic

DROP_REASONS = {
    "blank_responses": "fewer than two responses are non-blank",
    "identical_responses": "the non-blank responses are all the same text",
    "nonfinite_score": "the reward model gave a NaN or infinite score",
    "tie": "the best and worst scores are equal",
    "truncated_tie": "the scores tie and every response was cut at reward_model.max_length before it was scored",
    "below_min_margin": "best - worst score is below binarize.min_margin",
}
SPLITS = ("train_prefs", "test_prefs")


@dataclass
class Binarized:
    """The pairs kept and the prompts dropped, by reason (every key of ``DROP_REASONS``)."""

    pairs: list[dict[str, Any]] = field(default_factory=list)
    dropped: Counter = field(default_factory=lambda: Counter(dict.fromkeys(DROP_REASONS, 0)))


def pick_pair(responses: list[dict[str, Any]], min_margin: float) -> tuple[int, int] | str:
    """(chosen index, rejected index) among ``responses`` (``{text, score}``), or the drop reason."""
    candidates = [i for i, r in enumerate(responses) if r["text"].strip()]
    if len(candidates) < 2:
        return "blank_responses"
    if len({responses[i]["text"].strip() for i in candidates}) == 1:
        return "identical_responses"
    if not all(math.isfinite(responses[i]["score"]) for i in candidates):
        return "nonfinite_score"
    chosen = max(candidates, key=lambda i: (responses[i]["score"], -i))  # ties: the lowest index
    rejected = min(candidates, key=lambda i: (responses[i]["score"], i))
    margin = responses[chosen]["score"] - responses[rejected]["score"]
    if margin == 0:
        return "truncated_tie" if all(responses[i].get("truncated") for i in candidates) else "tie"
    if margin < min_margin:
        return "below_min_margin"
    return chosen, rejected


def ultrafeedback_row(row: dict[str, Any], chosen: int, rejected: int) -> dict[str, Any]:
    """A scored prompt as a row of the UltraFeedback-binarized layout, with every response and score kept."""
    responses, turns = row["responses"], row["turns"]

    def conversation(i: int) -> list[dict[str, str]]:
        return [*turns, {"role": "assistant", "content": responses[i]["text"]}]

    return {
        "prompt": turns[-1]["content"],
        "prompt_id": row["prompt_id"],
        "chosen": conversation(chosen),
        "rejected": conversation(rejected),
        "messages": conversation(chosen),
        "score_chosen": responses[chosen]["score"],
        "score_rejected": responses[rejected]["score"],
        "chosen_tokens": responses[chosen]["tokens"],
        "rejected_tokens": responses[rejected]["tokens"],
        "all_generated_responses": [r["text"] for r in responses],
        "all_rm_scores": [r["score"] if math.isfinite(r["score"]) else None for r in responses],
    }


def binarize(rows: list[dict[str, Any]], min_margin: float) -> Binarized:
    """Pairs from scored rows (``{prompt_id, turns, responses: [{text, score, tokens}]}``), in the rows' order."""
    result = Binarized()
    for row in rows:
        picked = pick_pair(row["responses"], min_margin)
        if isinstance(picked, str):
            result.dropped[picked] += 1
        else:
            result.pairs.append(ultrafeedback_row(row, *picked))
    return result


def split_pairs(pairs: list[dict], test_size: float | int, seed: int) -> dict[str, list[dict]]:
    """``{train_prefs: [...], test_prefs: [...]}``: a seeded carve-out of ``test_size`` (fraction or count), each
    part in the original order (``data.sources.carve_validation``).

    Raises:
        ValueError: the size leaves no test or no training pair (names ``binarize.test_size``).
    """
    index = datasets.Dataset.from_dict({"row": list(range(len(pairs)))})
    try:
        (_, train), (_, test) = carve_validation(index, test_size, seed)
    except ValueError:
        raise UserError(
            f"binarize.test_size={test_size} leaves no test pair or no training pair out of the {len(pairs)} pairs "
            "kept: give a count (e.g. binarize.test_size=1) or a larger fraction, or sample more prompts"
        ) from None
    return {"train_prefs": [pairs[i] for i in train], "test_prefs": [pairs[i] for i in test]}


def write_splits(output_dir: Path, splits: dict[str, list[dict]]) -> dict[str, Path]:
    """``<output_dir>/<split>.jsonl`` for each split, each written atomically; returns the paths."""
    paths = {}
    for name, rows in splits.items():
        paths[name] = Path(output_dir) / f"{name}.jsonl"
        write_text_atomic(paths[name], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return paths
