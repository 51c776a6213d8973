"""A complete SimPO run with TRL, written as a TRL user would: the peer side of ``benchmarks/whole_process_vs_trl.py``.

    python benchmarks/trl_simpo_run.py --model MODEL_DIR --data DATA_DIR --out OUT_DIR --steps 20 \\
        [--batch-size 4] [--lr 1e-4] [--beta 2.0] [--gamma-beta-ratio 0.5] [--max-length 1024] \\
        [--warmup-ratio 0.1] [--seed 42] [--probe probe.json] [--gradient-checkpointing]

Loads the model and its tokenizer from ``MODEL_DIR`` (``AutoModelForCausalLM.from_pretrained``, float32, the
default attention, i.e. sdpa), the rows of ``DATA_DIR/train_prefs.jsonl`` with ``datasets.load_dataset("json")``
(UltraFeedback-binarized rows: TRL extracts the prompt turn and applies the tokenizer's chat template itself), and
trains ``trl.experimental.cpo.CPOTrainer`` with:

- ``loss_type="simpo"``, ``cpo_alpha=0`` (pure SimPO, no NLL term), ``beta``, ``simpo_gamma = gamma_beta_ratio x
  beta`` (TRL's gamma is absolute; ours is a ratio);
- ``per_device_train_batch_size`` pairs per step, ``max_steps``, AdamW (``optim="adamw_torch_fused"``, TRL's
  default: ``torch.optim.AdamW(fused=True)``, like ours with ``optimizer.implementation=fused``), weight decay 0,
  linear warmup over ``ceil(warmup_ratio x steps)`` steps then cosine decay to 0 (``lr_scheduler_type="cosine"``),
  like ours;
- ``max_grad_norm=0`` (no clipping: ours has ``trainer.gradient_clip_val=null``), dropout off (TRL's default
  ``disable_dropout=True``; the model's config has every dropout at 0 anyway);
- ``gradient_checkpointing=False`` unless ``--gradient-checkpointing`` (CPOConfig's default is True; ours is
  ``model.gradient_checkpointing=false``, so the matched setting is off);
- ``max_length`` as ours. TRL 1.16's CPOTrainer has no ``max_prompt_length`` (it cuts the responses only), so the
  benchmark chooses lengths that truncate nothing on either side;
- CPU, float32 (``use_cpu=True``, no bf16/fp16), ``seed``, ``dataloader_num_workers=0``, ``report_to="none"``,
  ``disable_tqdm=True`` (ours runs with ``trainer.enable_progress_bar=false``), ``logging_steps=10`` (TRL's default
  and ours: ``trainer.log_every_n_steps=10``), no evaluation.

Saves what our run saves: one full checkpoint at the last step (``save_strategy="steps"``, ``save_steps=max_steps``:
``OUT_DIR/checkpoint-N`` with the weights, the AdamW state, scheduler, RNG and trainer state, like our
``checkpoints/last.ckpt``) and, after training, the final model with its tokenizer (``trainer.save_model(OUT_DIR/
"final")``, safetensors, like our ``hf/`` export).

``--probe FILE`` writes JSON: ``floor_rss_mib`` (``VmRSS`` at ``on_train_begin``, before the first step),
``t_train_start`` / ``t_first_step_end`` / ``t_last_step_end`` (``time.time()``), the phase marks ``imported``,
``model_loaded`` (tokenizer and model), ``data_loaded``, ``trainer_built`` (CPOTrainer's init, which tokenises),
``checkpoint_saved`` (``on_save``), ``export_start`` / ``export_end`` (``save_model``) and ``exit``, ``steps``,
``tokens`` (the chosen + rejected sequence tokens TRL tokenised, i.e. trained on in one epoch) and
``torch_threads``. The callback costs two clock reads per step; the token count is taken after the run.
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def vm_rss_mib() -> float:
    """Current resident set size of this process in MiB (``/proc/self/status``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="model + tokenizer directory (save_pretrained)")
    parser.add_argument("--data", type=Path, required=True, help="directory holding train_prefs.jsonl")
    parser.add_argument("--out", type=Path, required=True, help="output directory (checkpoint-N/ and final/)")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per step")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--beta", type=float, default=2.0)
    parser.add_argument("--gamma-beta-ratio", type=float, default=0.5)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--probe", type=Path, help="write the probe's JSON here")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="CPOConfig's default (off here)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    record: dict[str, Any] = {"imported": time.time()}

    class Probe(TrainerCallback):
        def on_train_begin(self, *_: Any, **__: Any) -> None:
            record.update(floor_rss_mib=vm_rss_mib(), t_train_start=time.time(), torch_threads=torch.get_num_threads())

        def on_step_end(self, *_: Any, **__: Any) -> None:
            record["t_last_step_end"] = time.time()
            record.setdefault("t_first_step_end", record["t_last_step_end"])

        def on_save(self, *_: Any, **__: Any) -> None:
            record["checkpoint_saved"] = time.time()

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # CPOTrainer pads with it (padding is masked out)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    record["model_loaded"] = time.time()
    dataset = load_dataset("json", data_files=str(args.data / "train_prefs.jsonl"), split="train")
    record["data_loaded"] = time.time()
    config = CPOConfig(
        output_dir=str(args.out),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        warmup_steps=math.ceil(args.warmup_ratio * args.steps),
        weight_decay=0.0,
        optim="adamw_torch_fused",
        max_grad_norm=0.0,
        loss_type="simpo",
        cpo_alpha=0.0,
        beta=args.beta,
        simpo_gamma=args.gamma_beta_ratio * args.beta,
        max_length=args.max_length,
        gradient_checkpointing=args.gradient_checkpointing,
        use_cpu=True,
        bf16=False,
        fp16=False,
        seed=args.seed,
        dataloader_num_workers=0,
        logging_steps=10,
        save_strategy="steps",
        save_steps=args.steps,
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    trainer = CPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=[Probe()])  # fmt: skip
    record["trainer_built"] = time.time()
    result = trainer.train()
    record["export_start"] = time.time()
    trainer.save_model(str(args.out / "final"))
    record["export_end"] = time.time()
    if args.probe:
        columns = trainer.train_dataset.select_columns(["chosen_input_ids", "rejected_input_ids"])
        tokens = sum(len(ids) for ids in columns["chosen_input_ids"]) + sum(
            len(ids) for ids in columns["rejected_input_ids"]
        )
        epochs = min(1.0, args.steps * args.batch_size / len(columns))
        record.update(steps=result.global_step, tokens=int(tokens * epochs), rows=len(columns))
        args.probe.parent.mkdir(parents=True, exist_ok=True)

        def write() -> None:  # at the interpreter's shutdown, after everything the run does
            record["exit"] = time.time()
            args.probe.write_text(json.dumps(record, indent=1))

        atexit.register(write)


if __name__ == "__main__":
    main()
