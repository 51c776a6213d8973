"""Whole-process cost of a SimPO run: ``python train.py`` against a TRL script, each a complete process.

    pip install -r requirements-bench.txt          # trl 1.16.0, accelerate 1.15.0
    python benchmarks/whole_process_vs_trl.py --preset mistral --steps 20 --repeats 3 \\
        --layouts padded,packed,shared_prompt,shared_prompt_packed
    python benchmarks/whole_process_vs_trl.py --preset llama3 --steps 8 --repeats 3 --layouts padded,...
    python benchmarks/whole_process_vs_trl.py --preset mistral --tiny --steps 3     # smoke test (small model)

Each run is a fresh process under ``/usr/bin/time -v`` (GNU time; ``apt-get install -y time`` where it is missing),
which gives the whole process's wall time ("Elapsed (wall clock) time": imports, setup, tokenisation, training,
checkpoint, export, exit) and peak resident memory ("Maximum resident set size"). A probe inside each process adds
the floor (``VmRSS`` just before the first step) and the training part (first step's start to last step's end):
``benchmarks/process_probe.py`` (a Lightning callback added with ``+callbacks.probe``) on our side, a
``TrainerCallback`` in ``benchmarks/trl_simpo_run.py`` on TRL's. So the table splits the wall time into startup
(launch to first step), training and end (last step to exit: checkpoint, export, teardown): the fixed cost per run
is startup + end.

Sides:

- ``trl``: ``python benchmarks/trl_simpo_run.py`` (``trl.experimental.cpo.CPOTrainer``, ``loss_type="simpo"``,
  ``cpo_alpha=0``; every setting is listed in that file's docstring);
- ``ours <layout>``: ``python train.py model.name_or_path=<model dir> data.dataset=<data dir> data.test_split=null
  data.batch_size=4 trainer.max_steps=N validate_before_training=false trainer.enable_progress_bar=false
  optimizer.lr=.. loss.beta=.. loss.gamma_beta_ratio=.. data.max_length=.. data.max_prompt_length=..
  hydra.run.dir=<fresh dir> data.layout=<layout>`` plus the probe; everything else is the default configuration
  (chunked log-probs ``model.chunk_size=1024``, CSV logger, ``last.ckpt`` + step checkpoint, ``hf/`` export,
  throughput callback, model summary, data report).

Same for both (the choices that make the comparison fair):

- the same weights: the random-initialised model is built once (``--seed``), saved with ``save_pretrained``
  (safetensors, float32) and its tokenizer into one model directory that both sides load from disk;
- the same rows: one ``train_prefs.jsonl`` (UltraFeedback-binarized layout) read by both, exactly
  ``steps x 4`` rows, so each side trains every row once (one epoch) in its own shuffled order; the chosen +
  rejected sequences are the same tokens on both sides (TRL templates prompt + response jointly, ours renders
  them apart: the same sequences; under Llama 3's template ours scores the 4-token assistant header as part of
  each response, TRL does not: slightly more work for ours). The ``tokens`` column is each side's own count, so a
  difference would show (and is warned about);
- no truncation: ``max_length`` is chosen above the longest pair (TRL 1.16's CPOTrainer has no
  ``max_prompt_length``; ours gets ``data.max_prompt_length`` = the preset's value, unused);
- float32 on CPU, sdpa attention, no dropout, no gradient clipping (TRL ``max_grad_norm=0``), fused AdamW on both
  (each side's default: TRL ``optim="adamw_torch_fused"``, ours ``optimizer.implementation=fused``), weight decay 0,
  linear warmup over ``ceil(0.1 x steps)`` then cosine to 0, lr, beta, gamma (TRL ``simpo_gamma =
  gamma_beta_ratio x beta``), seed 42, no gradient checkpointing (CPOConfig's default is on:
  ``--trl-gradient-checkpointing`` keeps it), no evaluation, no progress bars, logging every 10 steps (both
  defaults), no dataloader workers;
- the same environment: ``OMP_NUM_THREADS`` = ``MKL_NUM_THREADS`` = ``--threads`` (torch's intra-op threads; each
  probe records ``torch.get_num_threads()``), offline (``HF_HUB_OFFLINE=1``, ``HF_DATASETS_OFFLINE=1``), and cold
  caches: every run gets fresh, empty ``HF_DATASETS_CACHE`` and ``SIMPO_CACHE`` directories, so each side pays
  its first-run cost (TRL's Arrow conversion and ``map`` caches, our tokenisation cache) every time;
- what each side writes: one full checkpoint with optimizer state plus a Hugging Face export of the final model
  with its tokenizer (TRL ``checkpoint-N/`` + ``final/``; ours ``checkpoints/last.ckpt`` (+ the step checkpoint
  the default ``ModelCheckpoint`` keeps) + ``hf/``); the ``written MiB`` column is the size of each run's output
  directory (deleted after measuring).

Before the first run both sides' libraries are imported once, untimed (a warm page cache for both). Repeats are
interleaved (TRL, ours per layout, TRL, ...) to spread machine drift; every number in the table is
the median over ``--repeats`` runs of that side. Tokens per second: the pairs' chosen + rejected sequence tokens
(the same count whatever the layout: a shared-prompt layout computes fewer positions for the same pairs) over the
training part's wall time; ``tokens/s vs padded`` is against our ``padded`` run. A layout the working tree does not
accept (``data.layout`` missing from the config, or a value outside ``data.collate.LAYOUTS``) is skipped with a
message. The raw runs go to ``<work dir>/results.json``, the table to ``<work dir>/results.md`` (and
``--results FILE``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TIME_BIN = "/usr/bin/time"
DEFAULT_LAYOUTS = ("padded",)

# Model shapes. mistral: Mistral-7B's ratios scaled to hidden 512 (intermediate 3.5 x hidden, 4 query heads per KV
# head, untied embeddings), the real 32,000-token Mistral v0.1 vocabulary. llama3: benchmarks/simpo_vs_trl.py's
# model (hidden 256, 4 layers, tied embeddings) with the 128,256-token Llama 3 vocabulary.
PRESETS: dict[str, dict[str, Any]] = {
    "mistral": {
        "tokenizer": "mistral-v1",
        "architecture": {"model_type": "mistral", "hidden_size": 512, "intermediate_size": 1792,
                         "num_hidden_layers": 6, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 64,
                         "max_position_embeddings": 4096, "rope_theta": 10000.0, "sliding_window": None,
                         "tie_word_embeddings": False},
        "tiny_architecture": {"hidden_size": 64, "intermediate_size": 224, "num_hidden_layers": 2,
                              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16},
        "data": "varied",        # benchmarks/varied_pairs.py: prompts ~65, responses ~135 tokens, up to ~380
        "max_length": 1024,      # above the longest pair (prompt <= ~380 + response <= ~380): nothing truncated
        "max_prompt_length": 512,
        "steps": 20,
    },
    "llama3": {
        "tokenizer": "llama3",
        "architecture": {"model_type": "llama", "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
                         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
                         "rope_theta": 500000.0, "tie_word_embeddings": True},
        "tiny_architecture": {"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2,
                              "num_attention_heads": 4, "num_key_value_heads": 2},
        "data": "budget512",     # benchmarks/simpo_vs_trl.py's rows: prompt ~1/4, responses ~3/4 of 512 tokens
        "max_length": 512,
        "max_prompt_length": 128,
        "steps": 8,
    },
}  # fmt: skip


# ----------------------------------------------------------------------------------------------- /usr/bin/time


def _clock_seconds(text: str) -> float:
    """``h:mm:ss``, ``m:ss.ss`` or ``ss.ss`` as seconds."""
    seconds = 0.0
    for part in text.strip().split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def parse_time_v(text: str) -> dict[str, float]:
    """The numbers of GNU ``/usr/bin/time -v`` output that the benchmark uses.

    Returns:
        ``wall_s`` (Elapsed (wall clock) time), ``max_rss_mib`` (Maximum resident set size, KiB / 1024),
        ``user_s``, ``sys_s`` and ``exit_status`` (absent when time did not print it).

    Raises:
        ValueError: the text has no wall time or no maximum resident set size.
    """
    patterns = {
        "wall_s": r"Elapsed \(wall clock\) time \([^)]*\):\s*([0-9:.]+)",
        "max_rss_kib": r"Maximum resident set size \(kbytes\):\s*(\d+)",
        "user_s": r"User time \(seconds\):\s*([0-9.]+)",
        "sys_s": r"System time \(seconds\):\s*([0-9.]+)",
        "exit_status": r"Exit status:\s*(-?\d+)",
    }
    found: dict[str, float] = {}
    for key, pattern in patterns.items():
        match = re.search(pattern, text)
        if match:
            found[key] = _clock_seconds(match.group(1)) if key == "wall_s" else float(match.group(1))
    if "wall_s" not in found or "max_rss_kib" not in found:
        raise ValueError("not /usr/bin/time -v output: no 'Elapsed (wall clock) time' or 'Maximum resident set size'")
    found["max_rss_mib"] = found.pop("max_rss_kib") / 1024
    return found


def require_time_binary() -> None:
    if not os.access(TIME_BIN, os.X_OK):
        raise SystemExit(f"{TIME_BIN} (GNU time) is missing: apt-get install -y time")


# ----------------------------------------------------------------------------------------------- set-up


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="mistral")
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default: mistral 20, llama3 8)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per side; the table shows medians (default 1)")
    parser.add_argument("--layouts", default=",".join(DEFAULT_LAYOUTS),
                        help="comma-separated data.layout values of our runs, or `default` for no override "
                             "(the configuration's data.layout=auto) (default: padded)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS / MKL_NUM_THREADS of both sides")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per step (default 4)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--beta", type=float, default=2.0)
    parser.add_argument("--gamma-beta-ratio", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=42, help="model init and both trainers' seed")
    parser.add_argument("--data-seed", type=int, default=0, help="row synthesis seed")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer hidden-64 model of the preset (smoke test)")
    parser.add_argument("--no-trl", action="store_true", help="run only our side (no ratios to TRL)")
    parser.add_argument("--trl-gradient-checkpointing", action="store_true",
                        help="keep CPOConfig's default gradient_checkpointing=True (ours has none)")  # fmt: skip
    parser.add_argument("--ours-override", action="append", default=[],
                        help="extra key=value for train.py (repeatable), e.g. data.pack_length=2048")  # fmt: skip
    parser.add_argument("--phases", action="store_true",
                        help="time the fixed costs apart (ours run by benchmarks/phase_timer.py); adds their table")
    parser.add_argument("--work-dir", type=Path, help="where models, data, logs go (default: a new temp dir)")
    parser.add_argument("--results", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)
    args.steps = args.steps or PRESETS[args.preset]["steps"]
    args.layouts = [layout.strip() for layout in args.layouts.split(",") if layout.strip()]
    return args


def build_model_dir(preset: dict[str, Any], tiny: bool, seed: int, target: Path) -> Any:
    """Random-initialise the preset's model (float32, dropout 0) and save it with its tokenizer to ``target``."""
    import torch

    from data.tokenizers import load_tokenizer
    from simpo.models.policy import build_policy

    tokenizer = load_tokenizer(preset["tokenizer"])
    architecture = dict(preset["architecture"])
    if tiny:
        architecture.update(preset["tiny_architecture"])
    torch.manual_seed(seed)
    model = build_policy(tokenizer, architecture=architecture, dtype="float32", attn_implementation="sdpa")
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return tokenizer, sum(p.numel() for p in model.parameters())


def build_data_dir(preset: dict[str, Any], n_rows: int, tokenizer: Any, seed: int, target: Path) -> list[int]:
    """Write ``train_prefs.jsonl`` (``n_rows``) and ``test_prefs.jsonl`` to ``target``; returns the pairs' sequence
    token counts (prompt + chosen + prompt + rejected, our recipe, untruncated)."""
    from benchmarks import varied_pairs

    if preset["data"] == "varied":
        rows = varied_pairs.write_dataset(target, n_rows, 16, tokenizer, seed)
    else:
        from benchmarks.simpo_vs_trl import synthesise_rows

        target.mkdir(parents=True, exist_ok=True)
        rows = synthesise_rows(n_rows, 512, tokenizer, seed)
        test = synthesise_rows(8, 512, tokenizer, seed + varied_pairs.TEST_SEED_OFFSET)
        for name, split in (("train_prefs", rows), ("test_prefs", test)):
            (target / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in split))
    lengths = varied_pairs.measure(rows, tokenizer)
    return [2 * p + c + r for p, c, r in zip(lengths["prompt"], lengths["chosen"], lengths["rejected"], strict=True)]


def accepted_layouts(requested: list[str]) -> list[str | None]:
    """The requested layouts this working tree accepts; ``None`` stands for padded without a ``data.layout`` key."""
    probe = subprocess.run([sys.executable, "train.py", "data.layout=padded", "--cfg", "job"], cwd=ROOT,
                           capture_output=True, text=True)  # fmt: skip
    if probe.returncode != 0:
        skipped = [layout for layout in requested if layout != "padded"]
        if skipped:
            print(f"train.py does not accept data.layout here: skipping layouts {skipped}", file=sys.stderr)
        return [None] if "padded" in requested else []
    try:
        from data.collate import LAYOUTS
    except ImportError:
        LAYOUTS = tuple(requested)  # noqa: N806
    known = (*LAYOUTS, "default")  # default: no data.layout override (the configuration's own, e.g. auto)
    unknown = [layout for layout in requested if layout not in known]
    if unknown:
        print(f"skipping unknown layouts {unknown} (known: {list(known)})", file=sys.stderr)
    return [layout for layout in requested if layout in known]


# ----------------------------------------------------------------------------------------------- runs


def warm_page_cache(threads: int, work: Path) -> None:
    """Import both sides' libraries once, untimed, so that neither side's first run pays cold disk reads of them."""
    code = "import torch, transformers, datasets, lightning, hydra, trl.experimental.cpo"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=child_env(threads, work / "warm"),
                   capture_output=True, check=False)  # fmt: skip
    shutil.rmtree(work / "warm", ignore_errors=True)


def child_env(threads: int, run_dir: Path) -> dict[str, str]:
    """The environment of either side: thread counts, offline, cold caches of their own."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1",
               HF_DATASETS_CACHE=str(run_dir / "cache" / "hf_datasets"),
               SIMPO_CACHE=str(run_dir / "cache" / "simpo"))  # fmt: skip
    return env


def ours_command(args: argparse.Namespace, preset: dict[str, Any], model_dir: Path, data_dir: Path, out_dir: Path,
                 probe: Path, layout: str | None) -> list[str]:  # fmt: skip
    """``python train.py`` with the benchmark's overrides (see the module docstring)."""
    command = [
        sys.executable, "train.py",
        f"model.name_or_path={model_dir}", f"data.dataset={data_dir}", "data.test_split=null",
        f"data.batch_size={args.batch_size}", f"trainer.max_steps={args.steps}", "validate_before_training=false",
        "trainer.enable_progress_bar=false", f"optimizer.lr={args.lr}", f"loss.beta={args.beta}",
        f"loss.gamma_beta_ratio={args.gamma_beta_ratio}", f"data.max_length={preset['max_length']}",
        f"data.max_prompt_length={preset['max_prompt_length']}", f"seed={args.seed}", f"hydra.run.dir={out_dir}",
        "+callbacks.probe._target_=benchmarks.process_probe.ProcessProbe", f"+callbacks.probe.path={probe}",
    ]  # fmt: skip
    if layout not in (None, "default"):
        command.append(f"data.layout={layout}")
    return command + list(args.ours_override)


def trl_command(args: argparse.Namespace, preset: dict[str, Any], model_dir: Path, data_dir: Path, out_dir: Path,
                probe: Path) -> list[str]:  # fmt: skip
    command = [
        sys.executable, str(ROOT / "benchmarks" / "trl_simpo_run.py"), "--model", str(model_dir), "--data",
        str(data_dir), "--out", str(out_dir), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
        "--lr", str(args.lr), "--beta", str(args.beta), "--gamma-beta-ratio", str(args.gamma_beta_ratio),
        "--max-length", str(preset["max_length"]), "--seed", str(args.seed), "--probe", str(probe),
    ]  # fmt: skip
    return command + (["--gradient-checkpointing"] if args.trl_gradient_checkpointing else [])


PHASES = (  # (key, label) of --phases' table, in the order a run meets them; the rows add up to the wall time
    ("imports", "Python and imports"),
    ("checks", "config and checks (ours: Hydra compose, run directory, tokenizer files)"),
    ("tokenizer_model", "tokenizer and model load"),
    ("data", "data: read, tokenise or load the cache (TRL: read only)"),
    ("trainer", "trainer build and fit setup (TRL: with its tokenisation)"),
    ("first_step", "first step"),
    ("other_steps", "the other steps"),
    ("checkpoint", "checkpoint save"),
    ("export", "Hugging Face export"),
    ("rest", "the rest (teardown, exit)"),
)


def phase_seconds(recorded: dict[str, Any], phases: dict[str, Any] | None, launched: float,
                  wall_s: float) -> dict[str, float]:  # fmt: skip
    """Seconds of each ``PHASES`` key for one run: ours from ``benchmarks/phase_timer.py``'s ``phases`` and the
    probe, TRL's from the marks in its probe (``benchmarks/trl_simpo_run.py``); ``rest`` is what the others leave of
    the wall time."""
    start, first, last = recorded["t_train_start"], recorded["t_first_step_end"], recorded["t_last_step_end"]
    if phases is not None:  # ours
        calls = phases["calls"]

        def spans(name: str) -> list[list[float]]:
            return calls.get(name, [])

        tokenizer, module = spans("load_tokenizer")[0], spans("build_module")[0]
        seconds = {
            "imports": phases["imported"] - launched,
            "checks": tokenizer[0] - phases["imported"],
            "tokenizer_model": (tokenizer[1] - tokenizer[0]) + (module[1] - module[0]),
            "data": spans("load")[0][1] - spans("prepare_data")[0][0],  # fit calls both again (cached, ~0 s)
            "trainer": start - module[1],
            "checkpoint": sum(end - begin for begin, end in spans("save_checkpoint")),
            "export": sum(end - begin for begin, end in spans("export")),
        }
    else:
        seconds = {
            "imports": recorded["imported"] - launched,
            "checks": 0.0,
            "tokenizer_model": recorded["model_loaded"] - recorded["imported"],
            "data": recorded["data_loaded"] - recorded["model_loaded"],
            "trainer": start - recorded["data_loaded"],
            "checkpoint": recorded["checkpoint_saved"] - last,
            "export": recorded["export_end"] - recorded["export_start"],
        }
    seconds.update(first_step=first - start, other_steps=last - first)
    seconds["rest"] = wall_s - sum(seconds.values())
    return seconds


def phase_table(rows: list[dict[str, Any]]) -> str:
    """Rows = ``PHASES``, columns = the sides (medians of their runs), each ours against TRL's."""
    names = [row["name"] for row in rows]
    trl = next((row for row in rows if row["name"] == "trl"), None)
    lines = ["| phase (s) | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for key, label in (*PHASES, ("total", "whole process (wall)")):
        cells = []
        for row in rows:
            value = row["wall_s"] if key == "total" else row.get(f"phase_{key}")
            base = trl and (trl["wall_s"] if key == "total" else trl.get(f"phase_{key}"))
            diff = f" ({value - base:+.1f})" if base is not None and row is not trl and value is not None else ""
            cells.append("-" if value is None else f"{value:.1f}{diff}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def directory_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def metrics_tokens_per_sec(run_dir: Path) -> float | None:
    """Median ``train/tokens_per_sec`` of our ``metrics.csv`` (the throughput callback's per-step value)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return None
    with path.open() as handle:
        values = [float(row["train/tokens_per_sec"]) for row in csv.DictReader(handle)
                  if row.get("train/tokens_per_sec")]  # fmt: skip
    return statistics.median(values) if values else None


def run_one(name: str, command: list[str], run_dir: Path, threads: int, output_dir: Path, probe: Path,
            phases: Path | None = None) -> dict:  # fmt: skip
    """One complete process under /usr/bin/time -v; returns its measurements (with ``phase_*`` seconds when
    ``phases`` is the phase timer's file or the side is TRL's and ``--phases`` asked for them)."""
    run_dir.mkdir(parents=True)
    time_file = run_dir / "time.txt"
    with (run_dir / "stdout.log").open("w") as out, (run_dir / "stderr.log").open("w") as err:
        launched = time.time()
        proc = subprocess.run([TIME_BIN, "-v", "-o", str(time_file), *command], cwd=ROOT, stdout=out, stderr=err,
                              env=child_env(threads, run_dir))  # fmt: skip
    if proc.returncode != 0 or not probe.is_file():
        tail = (run_dir / "stderr.log").read_text()[-3000:]
        raise RuntimeError(f"{name} failed (exit {proc.returncode}); logs in {run_dir}:\n{tail}")
    timed = parse_time_v(time_file.read_text())
    recorded = json.loads(probe.read_text())
    train_s = recorded["t_last_step_end"] - recorded["t_train_start"]
    result = {
        "name": name, "wall_s": timed["wall_s"], "peak_rss_mib": timed["max_rss_mib"],
        "floor_rss_mib": recorded["floor_rss_mib"], "startup_s": recorded["t_train_start"] - launched,
        "train_s": train_s, "end_s": timed["wall_s"] - (recorded["t_last_step_end"] - launched),
        "user_s": timed.get("user_s"), "sys_s": timed.get("sys_s"), "steps": recorded["steps"],
        "tokens": recorded["tokens"], "tokens_per_sec": recorded["tokens"] / train_s,
        "torch_threads": recorded.get("torch_threads"), "written_mib": directory_mib(output_dir),
        "metrics_tokens_per_sec": metrics_tokens_per_sec(output_dir),
    }  # fmt: skip
    if phases is not None:
        timer = json.loads(phases.read_text()) if name != "trl" else None
        for key, value in phase_seconds(recorded, timer, launched, timed["wall_s"]).items():
            result[f"phase_{key}"] = value
    report = output_dir / "data_report.json"
    if report.is_file():
        shutil.copy(report, run_dir / "data_report.json")
    shutil.rmtree(output_dir, ignore_errors=True)
    shutil.rmtree(run_dir / "cache", ignore_errors=True)
    return result


def median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"name": runs[0]["name"], "runs": len(runs)}
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            row[key] = statistics.median(run[key] for run in runs)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    trl = next((row for row in rows if row["name"] == "trl"), None)
    padded = next((row for row in rows if row["name"] == "ours padded"), None)

    def ratio(row: dict[str, Any], base: dict[str, Any] | None, key: str) -> str:
        return f"{row[key] / base[key]:.2f}x" if base else "-"

    lines = [
        "| run | wall s | peak RSS MiB | floor MiB | startup s | train s | end s | written MiB | tokens | tokens/s "
        "| wall vs TRL | peak RSS vs TRL | floor vs TRL | tokens/s vs padded |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        vs_padded = ratio(row, padded, "tokens_per_sec") if row["name"].startswith("ours") else "-"
        lines.append(
            f"| {row['name']} | {row['wall_s']:.1f} | {row['peak_rss_mib']:.0f} | {row['floor_rss_mib']:.0f} | "
            f"{row['startup_s']:.1f} | {row['train_s']:.1f} | {row['end_s']:.1f} | {row['written_mib']:.0f} | "
            f"{row['tokens']:.0f} | {row['tokens_per_sec']:.0f} | {ratio(row, trl, 'wall_s')} | "
            f"{ratio(row, trl, 'peak_rss_mib')} | {ratio(row, trl, 'floor_rss_mib')} | {vs_padded} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    require_time_binary()
    preset = PRESETS[args.preset]
    layouts = accepted_layouts(args.layouts)
    if not layouts:
        raise SystemExit("no layout left to run")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix=f"whole_process_{args.preset}_"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir, data_dir = work / "model", work / "data"
    tokenizer, n_params = build_model_dir(preset, args.tiny, args.seed, model_dir)
    pair_tokens = build_data_dir(preset, args.steps * args.batch_size, tokenizer, args.data_seed, data_dir)
    longest = max(pair_tokens)  # prompt counted twice; one sequence is at most prompt + longer response
    print(f"model: {args.preset}{' (tiny)' if args.tiny else ''}, {n_params / 1e6:.1f}M parameters, vocabulary "
          f"{len(tokenizer)}; data: {len(pair_tokens)} pairs, {sum(pair_tokens)} sequence tokens, longest pair "
          f"{longest}; work dir {work}", file=sys.stderr)  # fmt: skip

    warm_page_cache(args.threads, work)
    sides: list[tuple[str, str | None]] = [] if args.no_trl else [("trl", None)]
    sides += [(f"ours {layout or 'padded'}", layout) for layout in layouts]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in sides}
    for repeat in range(args.repeats):
        for name, layout in sides:
            slug = name.replace(" ", "_")
            run_dir, output_dir = work / "runs" / f"{slug}_{repeat}", work / "outputs" / f"{slug}_{repeat}"
            probe, phases = run_dir / "probe.json", (run_dir / "phases.json" if args.phases else None)
            if name == "trl":
                command = trl_command(args, preset, model_dir, data_dir, output_dir, probe)
            else:
                command = ours_command(args, preset, model_dir, data_dir, output_dir, probe, layout)
                if phases is not None:  # the same command, run by the phase timer
                    command[1:2] = [str(ROOT / "benchmarks" / "phase_timer.py"), str(phases), "train.py"]
            print(f"[{repeat + 1}/{args.repeats}] {name} ...", file=sys.stderr, flush=True)
            result = run_one(name, command, run_dir, args.threads, output_dir, probe, phases)
            print(f"    wall {result['wall_s']:.1f} s, peak RSS {result['peak_rss_mib']:.0f} MiB, floor "
                  f"{result['floor_rss_mib']:.0f} MiB, train {result['train_s']:.1f} s", file=sys.stderr)  # fmt: skip
            runs[name].append(result)
    rows = [median_row(runs[name]) for name, _ in sides]
    token_counts = {row["name"]: row["tokens"] for row in rows}
    if max(token_counts.values()) > 1.01 * min(token_counts.values()):
        print(f"WARNING: the sides trained different token counts: {token_counts}", file=sys.stderr)
    threads = {run["torch_threads"] for side in runs.values() for run in side}
    header = (
        f"{args.preset}{' (tiny)' if args.tiny else ''}: {n_params / 1e6:.1f}M parameters, vocabulary "
        f"{len(tokenizer)}, {args.steps} steps x {args.batch_size} pairs ({sum(pair_tokens)} sequence tokens), "
        f"float32 CPU, torch threads {sorted(threads)}, {os.cpu_count()} CPU cores, median of {args.repeats} "
        f"run(s) per side"
    )  # fmt: skip
    text = f"{header}\n\n{table(rows)}\n"
    if args.phases:
        intro = "Where the time goes (median seconds per phase; ours with the difference to TRL's):"
        text += f"\n{intro}\n\n{phase_table(rows)}\n"
    print("\n" + text)
    (work / "results.md").write_text(text)
    (work / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                   "runs": runs, "medians": rows}, indent=1))  # fmt: skip
    if args.results:
        args.results.write_text(text)
    print(f"raw runs: {work / 'results.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
