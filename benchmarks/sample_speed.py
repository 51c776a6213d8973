"""Batched Hugging Face generation (left padding, KV cache) against one prompt at a time, in generated tokens/s,
on the bundled default policy (conf/model/tiny_llama.yaml, random init) with the recipe's sampling settings.

    python benchmarks/sample_speed.py [--prompts 32] [--batch-size 32] [--max-new-tokens 32]

Prints a Markdown table (the one in benchmarks/RESULTS.md). Target: batched >= 3x one-at-a-time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import lightning as L
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.tokenizers import load_tokenizer
from simpo.models.decoding import Decoding
from simpo.models.policy import build_policy
from simpo.sampling.engines import HFEngine
from simpo.sampling.prompts import load_prompts, prompt_token_ids

ROOT = Path(__file__).resolve().parents[1]


def tokens_per_second(engine: HFEngine, prompts: list[list[int]], decoding: Decoding) -> tuple[float, int, float]:
    """(tokens/s, generated tokens, seconds) of one engine call over ``prompts``."""
    start = time.perf_counter()
    samples = engine.generate(prompts, decoding, seed=13)
    seconds = time.perf_counter() - start
    tokens = sum(len(s.ids) + s.finished for s in samples)
    return tokens / seconds, tokens, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    model_cfg = OmegaConf.load(ROOT / "conf" / "model" / "tiny_llama.yaml")
    tokenizer = load_tokenizer("llama3")
    L.seed_everything(42, verbose=False)
    model = build_policy(tokenizer, architecture=OmegaConf.to_container(model_cfg.architecture)).eval()
    prompts = load_prompts(str(ROOT / "data" / "tiny_prefs"), "train_prefs", "prompt", args.prompts).prompts
    ids = prompt_token_ids(tokenizer, prompts)
    # the recipe's sampling; no stop token, so both sides generate exactly the same number of tokens
    decoding = Decoding(temperature=0.8, top_p=0.95, max_new_tokens=args.max_new_tokens, stop_token_ids=(-1,))
    tokens_per_second(HFEngine(model, tokenizer.eos_token_id, args.batch_size), ids[:2], decoding)  # warm-up
    rows = []
    for name, batch_size in (("one prompt at a time", 1), (f"batched ({args.batch_size} prompts)", args.batch_size)):
        rate, tokens, seconds = tokens_per_second(HFEngine(model, tokenizer.eos_token_id, batch_size), ids, decoding)
        rows.append((name, rate, tokens, seconds))
    base = rows[0][1]
    print(f"{len(ids)} prompts x {args.max_new_tokens} new tokens, temperature 0.8, top_p 0.95, KV cache, CPU\n")
    print("| generation | tokens | seconds | tokens/s | speed-up |\n|---|---|---|---|---|")
    for name, rate, tokens, seconds in rows:
        print(f"| {name} | {tokens} | {seconds:.1f} | {rate:.0f} | {rate / base:.1f}x |")


if __name__ == "__main__":
    main()
