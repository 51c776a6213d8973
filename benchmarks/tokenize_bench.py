"""Tokenisation throughput: rows/second of the SimPO data recipe on UltraFeedback-layout rows, Llama 3 tokenizer.

    python benchmarks/tokenize_bench.py [--rows 5000] [--num-proc 1 2]

Synthesises realistic rows (multi-sentence prompts, 3-8 sentence answers, the UltraFeedback-binarized layout:
``prompt`` text, ``chosen`` / ``rejected`` conversations), then times ``datasets.map`` with the data module's
``PairEncoder`` (chat template, batched tokenisation, BOS check, truncation at 2048 / 1800) for each process count.
Prints a table of rows/s and rows/s per process.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import datasets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.pair_encoding import PairEncoder, TruncationSettings
from data.tokenizers import load_tokenizer

WORD_TEXT = (
    "the model answer question data training reward policy preference response token length sequence batch "
    "learning rate gradient loss function value network layer attention memory process result example method "
    "because however therefore which while when although since also often usually carefully quickly clearly "
    "write explain describe compare summarise list give provide consider improve measure check"
)
WORDS = WORD_TEXT.split()


def sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(8, 22))]
    return " ".join(words).capitalize() + rng.choice([".", ".", ".", "?", "!"])


def synthesise(count: int, seed: int = 0) -> datasets.Dataset:
    """``count`` UltraFeedback-binarized rows of realistic length (~60-token prompts, ~120-token answers)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        prompt = " ".join(sentence(rng) for _ in range(rng.randint(2, 5)))
        chosen = " ".join(sentence(rng) for _ in range(rng.randint(3, 8)))
        rejected = " ".join(sentence(rng) for _ in range(rng.randint(2, 6)))
        user = {"role": "user", "content": prompt}
        rows.append({
            "prompt": prompt,
            "chosen": [user, {"role": "assistant", "content": chosen}],
            "rejected": [user, {"role": "assistant", "content": rejected}],
            "score_chosen": 8.0,
            "score_rejected": 4.0,
        })  # fmt: skip
    return datasets.Dataset.from_list(rows)


def measure(rows: datasets.Dataset, encoder: PairEncoder, num_proc: int | None) -> float:
    """Seconds to tokenise ``rows`` with ``num_proc`` processes."""
    start = time.perf_counter()
    rows.map(
        encoder,
        batched=True,
        batch_size=256,
        num_proc=num_proc,
        remove_columns=rows.column_names,
        load_from_cache_file=False,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--num-proc", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    datasets.disable_progress_bars()
    tokenizer = load_tokenizer("llama3")
    rows = synthesise(args.rows).select_columns(["prompt", "chosen", "rejected"])
    encoder = PairEncoder(tokenizer, TruncationSettings(2048, 1800), "ultrafeedback")
    measure(rows.select(range(min(256, len(rows)))), encoder, None)  # warm-up: template compile, caches
    sample = encoder(rows.select(range(200)).to_dict())
    tokens = sum(len(c) + len(r) for c, r in zip(sample["chosen_input_ids"], sample["rejected_input_ids"], strict=True))
    print(
        f"{args.rows} UltraFeedback-layout rows, Llama 3 tokenizer, ~{tokens / 200:.0f} tokens per pair (2 sequences)"
    )
    print("| processes | seconds | rows/s | rows/s per process |\n|---:|---:|---:|---:|")
    for num_proc in args.num_proc:
        seconds = measure(rows, encoder, num_proc if num_proc > 1 else None)
        rate = args.rows / seconds
        print(f"| {num_proc} | {seconds:.2f} | {rate:,.0f} | {rate / num_proc:,.0f} |")


if __name__ == "__main__":
    main()
