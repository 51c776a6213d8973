"""Time and memory per SimPO training step: this project against TRL's CPOTrainer, each in its own process.

    pip install -r requirements-bench.txt
    python benchmarks/simpo_vs_trl.py                      # CPU: Llama hidden 256 x 4 layers, 4 pairs x 512 tokens
    python benchmarks/simpo_vs_trl.py --device cuda --dtype bfloat16 --model-size 1b --seq 2048 --pairs 2

Both sides train the same random-initialised Llama (the real Llama 3 tokenizer and 128,256-token vocabulary) on
the same synthetic preference rows (prompts about a quarter, responses about three quarters of ``--seq``
tokens, words drawn from the bundled ``data/tiny_prefs``) with the same SimPO settings: beta, gamma
(TRL's ``simpo_gamma`` is absolute: gamma_beta_ratio x beta), ``cpo_alpha=0`` (no NLL term), batch, AdamW with
linear warmup and cosine decay, no gradient clipping, no dropout. Rows:

- ``trl``: ``trl.experimental.cpo.CPOTrainer(loss_type="simpo")`` (full logits of every position).
- ``ours (chunk_size=K)``: ``SimPOModule`` + the SimPO objective in a Lightning ``Trainer`` (what ``train.py`` runs),
  labelled positions only, projected K tokens at a time.
- ``ours (full logits)``: the same with ``loss.chunk_size=null``.

Each row is a fresh child process, so its peak resident memory (``ru_maxrss``; on GPU
``torch.cuda.max_memory_allocated``) is its own. Seconds per step: median over the steps after ``--warmup``.
Tokens per second: non-padding tokens of the (2 x pairs, T) batches over the step times.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Llama architectures (vocabulary size and special ids come from the tokenizer).
MODEL_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 4,
             "num_key_value_heads": 2},
    "1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
           "num_key_value_heads": 8, "head_dim": 64},  # Llama 3.2 1B
}  # fmt: skip
for _arch in MODEL_SIZES.values():
    _arch.update(model_type="llama", max_position_embeddings=4096, rope_theta=500000.0, tie_word_embeddings=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run (default 8)")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the timings (default 2)")
    parser.add_argument("--chunk-size", type=int, default=1024, help="our loss.chunk_size (default 1024)")
    parser.add_argument("--pairs", type=int, default=4, help="preference pairs per step (default 4)")
    parser.add_argument("--seq", type=int, default=512, help="token budget of prompt + response (default 512)")
    parser.add_argument("--model-size", choices=sorted(MODEL_SIZES), default="tiny")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="parameter dtype")
    parser.add_argument("--beta", type=float, default=2.0)
    parser.add_argument("--gamma-beta-ratio", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["trl", "ours", "ours-full"], action="append",
                        help="run only these rows (repeatable; default all three)")  # fmt: skip
    parser.add_argument("--worker", choices=["trl", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--full-logits", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.warmup >= args.steps:
        parser.error("--warmup must be smaller than --steps")
    return args


# ----------------------------------------------------------------------------------------------- data


def synthesise_rows(n_rows: int, seq: int, tokenizer: Any, seed: int) -> list[dict[str, Any]]:
    """``n_rows`` UltraFeedback-layout rows: a prompt of about seq/4 tokens after templating, and chosen and
    rejected responses of 80-100% of about 3 seq/4 tokens each, made of words of the bundled data set."""
    text = (ROOT / "data" / "tiny_prefs" / "train_prefs.jsonl").read_text()
    words = re.findall(r"[A-Za-z']+[.,!?]?", " ".join(json.loads(line)["prompt"] + " " + json.loads(line)["chosen"][-1]
                                                      ["content"] for line in text.splitlines()[:200]))  # fmt: skip
    rng = random.Random(seed)

    def sentence(n_tokens: int) -> str:
        out: list[str] = []
        while True:
            out.extend(rng.choice(words) for _ in range(max(1, (n_tokens - len(out)) // 2)))
            ids = tokenizer(" ".join(out), add_special_tokens=False)["input_ids"]
            if len(ids) >= n_tokens:
                return tokenizer.decode(ids[:n_tokens]).strip()

    rows = []
    prompt_budget, response_budget = seq // 4 - 30, 3 * seq // 4 - 10  # leave room for the chat template
    for _ in range(n_rows):
        prompt = sentence(int(prompt_budget * rng.uniform(0.8, 1.0)))
        chosen, rejected = (sentence(int(response_budget * rng.uniform(0.8, 1.0))) for _ in range(2))
        user = {"role": "user", "content": prompt}
        rows.append({
            "prompt": prompt,
            "chosen": [user, {"role": "assistant", "content": chosen}],
            "rejected": [user, {"role": "assistant", "content": rejected}],
        })  # fmt: skip
    return rows


# ----------------------------------------------------------------------------------------------- workers


def peak_memory_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**10
    return float("nan")


def build_model(args: argparse.Namespace, tokenizer: Any) -> Any:
    import lightning as L

    from simpo.models.policy import build_policy

    L.seed_everything(args.seed, verbose=False)
    return build_policy(tokenizer, architecture=dict(MODEL_SIZES[args.model_size]), dtype=args.dtype,
                        attn_implementation="sdpa")  # fmt: skip


def worker_ours(args: argparse.Namespace) -> dict[str, Any]:
    """This project: SimPOModule + the SimPO objective + its AdamW/cosine schedule in a Lightning Trainer."""
    import lightning as L
    import torch

    from data.datamodule import PreferenceDataModule
    from data.tokenizers import load_tokenizer
    from simpo.objectives import SimPO
    from simpo.training.module import SimPOModule

    tokenizer = load_tokenizer("llama3")
    policy = build_model(args, tokenizer)
    data = PreferenceDataModule(tokenizer, str(args.data), train_split="train", test_split=None, max_length=args.seq,
                                max_prompt_length=args.seq // 4, batch_size=args.pairs, seed=args.seed)  # fmt: skip
    module = SimPOModule(policy, SimPO(beta=args.beta, gamma_beta_ratio=args.gamma_beta_ratio),
                         chunk_size=None if args.full_logits else args.chunk_size, lr=args.lr)  # fmt: skip
    times: list[float] = []
    tokens: list[int] = []
    start: dict[str, float] = {}

    class StepTimer(L.Callback):
        def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            start["rss"] = current_rss_mb()

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            if args.device == "cuda":
                torch.cuda.synchronize()
            tokens.append(int(batch["attention_mask"].sum()))
            start["t"] = time.perf_counter()

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if args.device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start["t"])

    trainer = L.Trainer(accelerator="gpu" if args.device == "cuda" else "cpu", devices=1, max_steps=args.steps,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[StepTimer()], num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(module, datamodule=data)
    return {"times": times, "tokens": tokens, "rss_before_mb": start.get("rss", float("nan"))}


def worker_trl(args: argparse.Namespace) -> dict[str, Any]:
    """TRL: CPOTrainer with loss_type="simpo" and cpo_alpha=0 (pure SimPO), on the same templated texts."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import datasets
    import torch
    from transformers import TrainerCallback
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    from data.pair_encoding import split_turns
    from data.templating import template_texts
    from data.tokenizers import load_tokenizer

    tokenizer = load_tokenizer("llama3")
    tokenizer.pad_token = tokenizer.eos_token  # TRL needs a pad id (padding is masked either way)
    model = build_model(args, tokenizer)
    rows = [json.loads(line) for line in args.data.joinpath("train.jsonl").read_text().splitlines()]
    texts = [template_texts(tokenizer, *split_turns(row)) for row in rows]  # the same recipe as ours
    dataset = datasets.Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in texts])
    times: list[float] = []
    tokens: list[int] = []
    start: dict[str, float] = {}

    class CountingCPOTrainer(CPOTrainer):
        def compute_loss(self, model: Any, inputs: dict[str, Any], *rest: Any, **kwargs: Any) -> Any:
            tokens.append(int(inputs["chosen_attention_mask"].sum() + inputs["rejected_attention_mask"].sum()))
            return super().compute_loss(model, inputs, *rest, **kwargs)

    class StepTimer(TrainerCallback):
        def on_train_begin(self, *_: Any, **__: Any) -> None:
            start["rss"] = current_rss_mb()

        def on_step_begin(self, *_: Any, **__: Any) -> None:
            if args.device == "cuda":
                torch.cuda.synchronize()
            start["t"] = time.perf_counter()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            if args.device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start["t"])

    with tempfile.TemporaryDirectory() as out_dir:
        config = CPOConfig(
            output_dir=out_dir, per_device_train_batch_size=args.pairs, max_steps=args.steps, learning_rate=args.lr,
            lr_scheduler_type="cosine", warmup_steps=math.ceil(0.1 * args.steps), weight_decay=0.0, max_grad_norm=0.0,
            loss_type="simpo", cpo_alpha=0.0, beta=args.beta, simpo_gamma=args.gamma_beta_ratio * args.beta,
            max_length=args.seq, use_cpu=args.device == "cpu", bf16=False, fp16=False, seed=args.seed,
            data_seed=args.seed, logging_steps=1, save_strategy="no", report_to="none", dataloader_num_workers=0,
            disable_tqdm=True, gradient_checkpointing=False,  # TRL's default is on; ours runs without it
        )  # fmt: skip
        trainer = CountingCPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                                     callbacks=[StepTimer()])  # fmt: skip
        trainer.train()
    return {"times": times, "tokens": tokens, "rss_before_mb": start.get("rss", float("nan"))}


def run_worker(args: argparse.Namespace) -> None:
    result = worker_trl(args) if args.worker == "trl" else worker_ours(args)
    result["peak_memory_mb"] = peak_memory_mb(args.device)
    if args.device == "cuda":
        import torch

        result["device_name"] = torch.cuda.get_device_name()
    print("BENCH_RESULT " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------------------------- parent


def child(args: argparse.Namespace, worker: str, data_dir: Path, full_logits: bool = False) -> dict[str, Any]:
    """Run one row in a fresh Python process and parse its result line."""
    cmd = [sys.executable, __file__, "--worker", worker, "--data", str(data_dir), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--chunk-size", str(args.chunk_size), "--pairs", str(args.pairs),
           "--seq", str(args.seq), "--model-size", args.model_size, "--device", args.device, "--dtype", args.dtype,
           "--beta", str(args.beta), "--gamma-beta-ratio", str(args.gamma_beta_ratio), "--lr", str(args.lr),
           "--seed", str(args.seed)]  # fmt: skip
    if full_logits:
        cmd.append("--full-logits")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH_RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise RuntimeError(f"{worker} run failed with exit code {proc.returncode}")
    return json.loads(lines[-1][len("BENCH_RESULT ") :])


def summarise(result: dict[str, Any], warmup: int) -> dict[str, float]:
    times, tokens = result["times"][warmup:], result["tokens"][warmup:]
    return {
        "sec_per_step": statistics.median(times),
        "peak_mb": result["peak_memory_mb"],
        "before_mb": result["rss_before_mb"],
        "tokens_per_step": sum(tokens) / len(tokens),
        "tokens_per_sec": sum(tokens) / sum(times),
    }


def table(rows: dict[str, dict[str, float]], device: str) -> str:
    memory = "peak GPU memory (MiB)" if device == "cuda" else "peak RSS (MiB)"
    base = rows.get("trl")
    lines = [f"| run | s/step (median) | {memory} | RSS at train start (MiB) | tokens/step | tokens/s | "
             "time vs TRL | memory vs TRL |", "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, r in rows.items():
        ratio_t = f"{r['sec_per_step'] / base['sec_per_step']:.2f}x" if base else "-"
        ratio_m = f"{r['peak_mb'] / base['peak_mb']:.2f}x" if base else "-"
        before = f"{r['before_mb']:.0f}" if device == "cpu" else "-"
        lines.append(f"| {name} | {r['sec_per_step']:.2f} | {r['peak_mb']:.0f} | {before} | "
                     f"{r['tokens_per_step']:.0f} | {r['tokens_per_sec']:.0f} | {ratio_t} | {ratio_m} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device visible")
    from data.tokenizers import load_tokenizer

    wanted = args.only or ["trl", "ours", "ours-full"]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        rows = synthesise_rows(args.steps * args.pairs + args.pairs, args.seq, load_tokenizer("llama3"), args.seed)
        (data_dir / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        results: dict[str, dict[str, float]] = {}
        for name in ("trl", "ours", "ours-full"):
            if name not in wanted:
                continue
            label = {"trl": "trl CPOTrainer (simpo)", "ours": f"ours (chunk_size={args.chunk_size})",
                     "ours-full": "ours (chunk_size=null, full logits)"}[name]  # fmt: skip
            print(f"running {label} ...", file=sys.stderr, flush=True)
            raw = child(args, "trl" if name == "trl" else "ours", data_dir, full_logits=name == "ours-full")
            results["trl" if name == "trl" else label] = summarise(raw, args.warmup)
            if "device_name" in raw:
                print(f"device: {raw['device_name']}", file=sys.stderr)
    print(f"\n{args.model_size} Llama, {args.dtype}, {args.device}, {args.pairs} pairs x {args.seq} tokens, "
          f"{args.steps} steps ({args.warmup} warm-up), {os.cpu_count()} CPU cores\n")  # fmt: skip
    print(table(results, args.device))


if __name__ == "__main__":
    main()
