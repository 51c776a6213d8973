"""Varied-length chat preference pairs for the whole-process benchmark (``benchmarks/whole_process_vs_trl.py``).

    python benchmarks/varied_pairs.py OUT_DIR [--rows 200] [--test-rows 16] [--tokenizer mistral-v1] [--seed 0]

Writes ``OUT_DIR/train_prefs.jsonl`` and ``OUT_DIR/test_prefs.jsonl`` (usable as ``data.dataset=OUT_DIR``) in the
UltraFeedback-binarized layout: ``prompt`` (a string), ``prompt_id``, and ``chosen`` / ``rejected`` message lists
``[user, assistant]`` sharing the user turn. Then prints the token-length statistics (p50 / p90 / mean / max of
the prompt, chosen and rejected sequences) under the bundled ``mistral-v1`` and ``llama3`` tokenizers.

Lengths are in tokens of the recipe's chat-templated texts (``data/templating.py`` + ``data/pair_encoding.py``:
the prompt with its BOS and the template's instruction markers, each response with its header and EOS) under the
``--tokenizer`` the rows are synthesised for. Each length is drawn independently from a log-normal distribution
with the requested mean (``sigma`` 0.6, so the median is mean / 1.2 and a long tail) and clipped to
``[minimum, --max-tokens]``: prompts about 65 tokens on average, chosen and rejected responses about 135 each
(drawn independently), at most about 380. The text is made of words of the bundled ``data/tiny_prefs``, cut to
the drawn token count (re-tokenising the cut text can move a count by a token or two, and another tokenizer
gives other counts: about 10-20% fewer tokens under Llama 3's larger vocabulary).

Deterministic: the same ``--seed``, row counts, tokenizer and targets give byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIGMA = 0.6  # log-normal shape: median = mean / exp(sigma^2 / 2), p90 about 1.8 x median
MIN_PROMPT_TOKENS = 16
MIN_RESPONSE_TOKENS = 8
TEST_SEED_OFFSET = 10_000  # the test split is drawn from another stream than the train split


def tiny_prefs_words() -> list[str]:
    """The words (with their trailing punctuation) of the bundled ``data/tiny_prefs`` training split."""
    words: list[str] = []
    for line in (ROOT / "data" / "tiny_prefs" / "train_prefs.jsonl").read_text().splitlines():
        row = json.loads(line)
        text = row["prompt"] + " " + row["chosen"][-1]["content"] + " " + row["rejected"][-1]["content"]
        words.extend(re.findall(r"[A-Za-z']+[.,!?]?", text))
    if not words:
        raise RuntimeError("data/tiny_prefs/train_prefs.jsonl holds no words")
    return words


def lognormal_length(rng: random.Random, mean: float, low: int, high: int) -> int:
    """A length drawn from a log-normal with this mean (shape ``SIGMA``), rounded and clipped to [low, high]."""
    mu = math.log(mean) - SIGMA**2 / 2
    return int(min(high, max(low, round(rng.lognormvariate(mu, SIGMA)))))


class _Texts:
    """Word salad of an exact token count under one tokenizer."""

    def __init__(self, tokenizer: Any, rng: random.Random) -> None:
        self.tokenizer = tokenizer
        self.rng = rng
        self.words = tiny_prefs_words()

    def make(self, n_tokens: int) -> str:
        n_tokens = max(1, n_tokens)
        out: list[str] = []
        while True:
            out.extend(self.rng.choice(self.words) for _ in range(max(1, math.ceil((n_tokens - len(out)) / 1.2))))
            ids = self.tokenizer(" ".join(out), add_special_tokens=False)["input_ids"]
            if len(ids) >= n_tokens:
                text = self.tokenizer.decode(ids[:n_tokens]).strip()
                return text[0].upper() + text[1:] if text else self.rng.choice(self.words)


def template_overheads(tokenizer: Any) -> tuple[int, int]:
    """Tokens the recipe adds around the prompt's and a response's content (BOS, markers, header, EOS)."""
    from data.pair_encoding import PairEncoder, TruncationSettings

    encoder = PairEncoder(tokenizer, TruncationSettings(max_length=100_000, max_prompt_length=50_000), "ultrafeedback")
    user, a, b = "word", "yes", "no"
    content = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in (user, a, b)]
    row = make_row(user, a, b)
    out = encoder({key: [value] for key, value in row.items()})
    return out["prompt_tokens"][0] - content[0], out["chosen_tokens"][0] - content[1]


def make_row(prompt: str, chosen: str, rejected: str) -> dict[str, Any]:
    """One UltraFeedback-binarized row."""
    user = {"role": "user", "content": prompt}
    return {
        "prompt": prompt,
        "prompt_id": hashlib.sha256(prompt.encode()).hexdigest(),
        "chosen": [user, {"role": "assistant", "content": chosen}],
        "rejected": [user, {"role": "assistant", "content": rejected}],
    }


def synthesise(
    n_rows: int,
    tokenizer: Any,
    seed: int = 0,
    prompt_mean: float = 65.0,
    response_mean: float = 135.0,
    max_tokens: int = 380,
) -> list[dict[str, Any]]:
    """``n_rows`` rows whose templated prompt / chosen / rejected token counts follow the target distributions.

    Args:
        n_rows: rows to make.
        tokenizer: the tokenizer (with its chat template) whose token counts are targeted.
        seed: the random stream (lengths and words).
        prompt_mean, response_mean: mean templated lengths (before clipping) of prompts and of responses.
        max_tokens: the longest templated prompt or response.
    """
    rng = random.Random(seed)
    texts = _Texts(tokenizer, rng)
    prompt_extra, response_extra = template_overheads(tokenizer)
    rows = []
    for _ in range(n_rows):
        prompt_len = lognormal_length(rng, prompt_mean, MIN_PROMPT_TOKENS, max_tokens)
        chosen_len, rejected_len = (
            lognormal_length(rng, response_mean, MIN_RESPONSE_TOKENS, max_tokens) for _ in range(2)
        )
        prompt = texts.make(prompt_len - prompt_extra)
        chosen = texts.make(chosen_len - response_extra)
        rejected = texts.make(rejected_len - response_extra)
        while rejected == chosen:  # never happens at these lengths, but a pair must differ
            rejected = texts.make(rejected_len - response_extra)
        rows.append(make_row(prompt, chosen, rejected))
    return rows


def measure(rows: list[dict[str, Any]], tokenizer: Any) -> dict[str, list[int]]:
    """Templated token counts of each row's prompt, chosen and rejected responses (the recipe, untruncated)."""
    from data.pair_encoding import PairEncoder, TruncationSettings

    encoder = PairEncoder(tokenizer, TruncationSettings(max_length=100_000, max_prompt_length=50_000), "ultrafeedback")
    out = encoder({field: [row[field] for row in rows] for field in ("prompt", "chosen", "rejected")})
    return {name: list(out[f"{name}_tokens"]) for name in ("prompt", "chosen", "rejected")}


def summary(values: list[int]) -> dict[str, float]:
    """p50 / p90 / mean / max of token counts (nearest-rank percentiles)."""
    ordered = sorted(values)

    def pct(p: float) -> int:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]

    return {"p50": pct(50), "p90": pct(90), "mean": round(sum(values) / len(values), 1), "max": ordered[-1]}


def length_table(rows: list[dict[str, Any]], tokenizer_names: tuple[str, ...] = ("mistral-v1", "llama3")) -> str:
    """A markdown table of the rows' length statistics under each bundled tokenizer."""
    from data.tokenizers import load_tokenizer

    lines = ["| tokenizer | field | p50 | p90 | mean | max |", "|---|---|---:|---:|---:|---:|"]
    for name in tokenizer_names:
        lengths = measure(rows, load_tokenizer(name))
        lengths["pair (prompt+chosen+prompt+rejected)"] = [
            2 * p + c + r for p, c, r in zip(lengths["prompt"], lengths["chosen"], lengths["rejected"], strict=True)
        ]
        for field, values in lengths.items():
            s = summary(values)
            lines.append(f"| {name} | {field} | {s['p50']} | {s['p90']} | {s['mean']} | {s['max']} |")
    return "\n".join(lines)


def write_dataset(
    out_dir: Path, n_train: int, n_test: int, tokenizer: Any, seed: int = 0, **targets: float
) -> list[dict[str, Any]]:
    """Write ``train_prefs.jsonl`` (``n_train`` rows) and ``test_prefs.jsonl`` (``n_test``) to ``out_dir``; returns
    the training rows."""
    out_dir.mkdir(parents=True, exist_ok=True)
    train = synthesise(n_train, tokenizer, seed, **targets)
    test = synthesise(n_test, tokenizer, seed + TEST_SEED_OFFSET, **targets)
    for name, rows in (("train_prefs", train), ("test_prefs", test)):
        (out_dir / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--rows", type=int, default=200, help="training rows (default 200)")
    parser.add_argument("--test-rows", type=int, default=16, help="test rows (default 16)")
    parser.add_argument("--tokenizer", default="mistral-v1", help="bundled name or dir whose lengths are targeted")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompt-mean", type=float, default=65.0)
    parser.add_argument("--response-mean", type=float, default=135.0)
    parser.add_argument("--max-tokens", type=int, default=380)
    args = parser.parse_args(argv)
    from data.tokenizers import load_tokenizer

    rows = write_dataset(args.out_dir, args.rows, args.test_rows, load_tokenizer(args.tokenizer), args.seed,
                         prompt_mean=args.prompt_mean, response_mean=args.response_mean,
                         max_tokens=args.max_tokens)  # fmt: skip
    print(f"wrote {args.rows} + {args.test_rows} rows to {args.out_dir} (lengths targeted under {args.tokenizer})\n")
    print(length_table(rows))


if __name__ == "__main__":
    main()
