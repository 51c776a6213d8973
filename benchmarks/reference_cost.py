"""What a reference model costs: SimPO, DPO with ``reference=cached`` and DPO with ``reference=model`` on the same
model, data and settings, each a complete ``python train.py`` process (issue 12, item 6).

    python benchmarks/reference_cost.py --preset mistral --steps 10 --repeats 2
    python benchmarks/reference_cost.py --preset mistral --tiny --steps 3          # smoke test

Every run is measured like ``benchmarks/whole_process_vs_trl.py`` does (its helpers are reused): ``/usr/bin/time -v``
for wall time and peak RSS, ``benchmarks/process_probe.py`` for the training part (first step's start to the last
step's end), so the step time excludes the cached reference's one-off pass, which runs before the first step and is
reported on its own (from its log line). Every run gets cold caches, so the cached side pays its pass every time.
The sides differ only in ``loss=`` / ``reference=``: SimPO (beta 2, gamma/beta 0.5), DPO (beta 0.1); everything
else is the default configuration with the preset's model and varied-length pairs, float32 on CPU. Repeats are
interleaved; the table holds medians and ratios to SimPO. The paper reports DPO with a live reference about 20%
slower and 10% heavier than SimPO; the target for ``reference=cached`` is within 1.05x of SimPO.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.whole_process_vs_trl import (  # noqa: E402
    PRESETS,
    build_data_dir,
    build_model_dir,
    require_time_binary,
    run_one,
)

SIDES = {
    "simpo": ["loss=simpo", "loss.beta=2.0", "loss.gamma_beta_ratio=0.5"],
    "dpo cached": ["loss=dpo", "loss.beta=0.1", "reference=cached"],
    "dpo model": ["loss=dpo", "loss.beta=0.1", "reference=model"],
}
PASS_LINE = re.compile(r"computed (\d+) pairs' reference log-probs in ([0-9.]+) s")


def command(args: argparse.Namespace, preset: dict[str, Any], model_dir: Path, data_dir: Path, out_dir: Path,
            probe: Path, side: list[str]) -> list[str]:  # fmt: skip
    return [
        sys.executable, "train.py", f"model.name_or_path={model_dir}", f"data.dataset={data_dir}",
        "data.test_split=null", f"data.batch_size={args.batch_size}", f"trainer.max_steps={args.steps}",
        "validate_before_training=false", "trainer.enable_progress_bar=false", f"optimizer.lr={args.lr}",
        f"data.max_length={preset['max_length']}", f"data.max_prompt_length={preset['max_prompt_length']}",
        f"seed={args.seed}", f"hydra.run.dir={out_dir}", f"data.layout={args.layout}",
        "+callbacks.probe._target_=benchmarks.process_probe.ProcessProbe", f"+callbacks.probe.path={probe}", *side,
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="mistral")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--layout", default="padded")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--tiny", action="store_true", help="a 2-layer hidden-64 model of the preset (smoke test)")
    parser.add_argument("--work-dir", type=Path)
    parser.add_argument("--results", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)
    require_time_binary()
    preset = PRESETS[args.preset]
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="reference_cost-"))
    model_dir, data_dir = work / "model", work / "data"
    tokenizer, n_params = build_model_dir(preset, args.tiny, args.seed, model_dir)
    build_data_dir(preset, args.steps * args.batch_size, tokenizer, 0, data_dir)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SIDES}
    for repeat in range(args.repeats):
        for name, side in SIDES.items():
            slug = name.replace(" ", "_")
            run_dir, out_dir = work / "runs" / f"{slug}_{repeat}", work / "outputs" / f"{slug}_{repeat}"
            probe = run_dir / "probe.json"
            print(f"[{repeat + 1}/{args.repeats}] {name} ...", file=sys.stderr, flush=True)
            result = run_one(name, command(args, preset, model_dir, data_dir, out_dir, probe, side), run_dir,
                             args.threads, out_dir, probe)  # fmt: skip
            found = PASS_LINE.search((run_dir / "stderr.log").read_text() + (run_dir / "stdout.log").read_text())
            result["pass_s"] = float(found.group(2)) if found else 0.0
            result["step_s"] = result["train_s"] / result["steps"]
            runs[name].append(result)
            print(f"    wall {result['wall_s']:.1f} s, peak RSS {result['peak_rss_mib']:.0f} MiB, step "
                  f"{result['step_s']:.2f} s, reference pass {result['pass_s']:.1f} s", file=sys.stderr)  # fmt: skip
    median = {name: {key: statistics.median(r[key] for r in rs) for key in ("wall_s", "peak_rss_mib", "step_s",
                     "pass_s", "floor_rss_mib")} for name, rs in runs.items()}  # fmt: skip
    base = median["simpo"]
    lines = [
        f"{args.preset}{' (tiny)' if args.tiny else ''}: {n_params / 1e6:.1f}M parameters, {args.steps} steps x "
        f"{args.batch_size} pairs, layout {args.layout}, float32 CPU, median of {args.repeats} run(s) per side",
        "",
        "| side | step s | vs SimPO | peak RSS MiB | vs SimPO | wall s | one-off reference pass s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in median.items():
        lines.append(f"| {name} | {row['step_s']:.2f} | {row['step_s'] / base['step_s']:.2f}x | "
                     f"{row['peak_rss_mib']:.0f} | {row['peak_rss_mib'] / base['peak_rss_mib']:.2f}x | "
                     f"{row['wall_s']:.1f} | {row['pass_s']:.1f} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    (work / "results.md").write_text(text)
    if args.results:
        args.results.write_text(text)


if __name__ == "__main__":
    main()
