"""GPU check of the FSDP path (issue 5): a ~1B random-initialised Llama (Llama 3.2 1B shape, Llama 3
vocabulary), bf16-mixed, FSDP2 on one GPU, 2 pairs x 2048 tokens per step; activation checkpointing on and
off, sdpa and flash_attention_2 (where flash-attn is installed). Each configuration is a real
``python train.py strategy=fsdp ...`` run in its own process; the table gives tokens/s, model FLOPs utilisation
and peak GPU memory (median over the steps after warm-up, from the throughput callback's metrics).

    python benchmarks/gpu_check.py                 # prints the table; --out DIR also writes gpu_check.md/json
    python benchmarks/gpu_check.py --steps 6 --configs sdpa-ckpt

Needs a CUDA GPU (exits with a message otherwise).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from simpo_vs_trl import MODEL_SIZES, ROOT, synthesise_rows

CONFIGS = {  # name: (attention, activation checkpointing)
    "sdpa-ckpt": ("sdpa", True),
    "sdpa": ("sdpa", False),
    "flash-ckpt": ("flash_attention_2", True),
    "flash": ("flash_attention_2", False),
}


def run_config(name: str, data_dir: Path, out_dir: Path, args: argparse.Namespace) -> dict[str, float | str]:
    """Train ``args.steps`` steps in a child ``train.py`` and summarise its throughput metrics."""
    attention, checkpointing = CONFIGS[name]
    architecture = ",".join(f"{k}:{v}" for k, v in MODEL_SIZES["1b"].items())
    run_dir = out_dir / name
    overrides = [
        f"hydra.run.dir={run_dir}", "strategy=fsdp", "trainer.devices=1", "trainer.accelerator=gpu",
        "trainer.precision=bf16-mixed", "model.dtype=float32", f"model.attn_implementation={attention}",
        f"model.gradient_checkpointing={str(checkpointing).lower()}", "~model.architecture",
        f"+model.architecture={{{architecture}}}",
        f"data.dataset={data_dir}", "data.test_split=null", f"data.batch_size={args.pairs}",
        f"data.max_length={args.seq}", f"data.max_prompt_length={args.seq // 4}", f"trainer.max_steps={args.steps}",
        "trainer.log_every_n_steps=1", "validate_before_training=false", "trainer.enable_progress_bar=false",
        "callbacks.hf_export=null", "callbacks.model_checkpoint=null", "optimizer.lr=1e-5",
    ]  # fmt: skip
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides], capture_output=True, text=True)
    if result.returncode != 0:
        return {"config": name, "error": result.stderr.strip().splitlines()[-1][:200]}
    with (run_dir / "metrics.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("train/tokens_per_sec")][args.warmup :]

    def median(key: str) -> float:
        values = [float(r[key]) for r in rows if r.get(key)]
        return statistics.median(values) if values else float("nan")

    return {
        "config": name,
        "tokens_per_sec": median("train/tokens_per_sec"),
        "mfu": median("train/mfu"),
        "peak_memory_gb": max(float(r["train/peak_memory_mb"]) for r in rows) / 1024,
        "loss_last": float(rows[-1]["train/loss"]) if rows and rows[-1].get("train/loss") else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_check.py needs a CUDA GPU")
    names = [n for n in args.configs if "flash" not in n or importlib.util.find_spec("flash_attn")]
    from data.tokenizers import load_tokenizer

    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    rows = synthesise_rows(args.pairs * (args.steps + 2), args.seq, load_tokenizer("llama3"), seed=0)
    (work / "data").mkdir()
    (work / "data" / "train_prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = [run_config(name, work / "data", work, args) for name in names]
    device = torch.cuda.get_device_name()
    lines = [
        f"GPU: {device}; Llama 3.2-1B shape, bf16-mixed, FSDP2 on 1 GPU, {args.pairs} pairs x {args.seq} tokens",
        "",
        "| config | tokens/s | MFU | peak GPU memory (GB) | last loss | error |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        cells = [f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k, ""))
                 for k in ("tokens_per_sec", "mfu", "peak_memory_gb", "loss_last", "error")]  # fmt: skip
        lines.append(f"| {r['config']} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_check.md").write_text("\n".join(lines) + "\n")
        (args.out / "gpu_check.json").write_text(json.dumps({"device": device, "results": results}, indent=2))


if __name__ == "__main__":
    main()
