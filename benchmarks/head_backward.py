"""The chunked head's two backward modes (``model.head_backward``): time and peak memory, each mode in its own process.

Two measurements on a Llama 3 vocabulary (128,256 tokens):

- ``head``: the labelled-only head alone (``chunked_token_logps``) on random (M, H) hidden states and a (V, H)
  weight: forward + backward of ``sum(logps * g)``, both gradients (hidden and weight) formed.
- ``step``: one training step of the Llama 3 vocabulary benchmark model of ``simpo_vs_trl.py`` (hidden 256, 4
  layers, tied embeddings): decoder forward, labelled-only head, a SimPO loss (length-normalised margin, beta 2,
  gamma 1), backward and an AdamW step, on a padded batch of ``--pairs`` pairs (prompt 1/4 and response 3/4 of
  ``--seq`` tokens, random ids), without Lightning.

Time: one child process per measurement runs the modes alternately, iteration by iteration (``--warmup`` rounds, then
``--repeats`` timed rounds; the median per mode), so a load that changes during the run (a shared machine) weighs on
both modes alike. Memory: one child process per (measurement, mode) runs a single iteration; on CPU its peak RSS
(``ru_maxrss``) and the rise over the RSS just before the iteration, on CUDA ``torch.cuda.max_memory_allocated``
and its rise over the memory allocated before. Usage (from the repository root)::

    python benchmarks/head_backward.py                         # both measurements, CPU, float32
    python benchmarks/head_backward.py --only head --tokens 2048 --hidden 2048 --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.process_probe import vm_rss_mib  # noqa: E402
from simpo.core.chunked_logprobs import HEAD_BACKWARDS, chunked_token_logps  # noqa: E402

VOCAB = 128_256  # Llama 3
STEP_MODEL = {"model_type": "llama", "vocab_size": VOCAB, "hidden_size": 256, "intermediate_size": 768,
              "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 4096, "rope_theta": 500000.0, "tie_word_embeddings": True}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["head", "step"], action="append", help="measurements to run (default both)")
    parser.add_argument("--modes", default=",".join(HEAD_BACKWARDS), help="head_backward values, comma-separated")
    parser.add_argument("--tokens", type=int, default=2048, help="head: scored tokens M (default 2048)")
    parser.add_argument("--hidden", type=int, default=256, help="head: hidden size H (default 256)")
    parser.add_argument("--pairs", type=int, default=4, help="step: pairs per batch (default 4)")
    parser.add_argument("--seq", type=int, default=512, help="step: tokens per sequence (default 512)")
    parser.add_argument("--chunk-size", type=int, default=1024, help="model.chunk_size (default 1024)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="weights and hidden")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "WHAT", "MODES"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def head_iteration(args: argparse.Namespace, mode: str) -> tuple[Callable[[], None], int]:
    """A closure running one forward + backward of the head alone, and the scored tokens it covers."""
    dtype, g = getattr(torch, args.dtype), torch.Generator().manual_seed(0)
    hidden = torch.randn(args.tokens, args.hidden, generator=g).to(args.device, dtype).requires_grad_()
    weight = (torch.randn(VOCAB, args.hidden, generator=g) / args.hidden**0.5).to(args.device, dtype).requires_grad_()
    targets = torch.randint(0, VOCAB, (args.tokens,), generator=g).to(args.device)
    grad_scale = torch.randn(args.tokens, generator=g).to(args.device)

    def iteration() -> None:
        hidden.grad = weight.grad = None
        logps, _ = chunked_token_logps(hidden, weight, targets, args.chunk_size, None, mode)
        (logps * grad_scale).sum().backward()

    return iteration, args.tokens


def step_iteration(args: argparse.Namespace, mode: str) -> tuple[Callable[[], None], int]:
    """A closure running one training step of the benchmark model, and the scored tokens of its batch."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from simpo.core.labelled_head import METHOD_NAME, attach_labelled_logps
    from simpo.core.logprobs import SequenceLogps, labelled_positions

    torch.manual_seed(0)
    config = LlamaConfig(**STEP_MODEL, attn_implementation="sdpa")
    policy = LlamaForCausalLM(config).to(args.device, getattr(torch, args.dtype))
    attach_labelled_logps(policy, args.chunk_size, mode)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    n, prompt = 2 * args.pairs, args.seq // 4
    ids = torch.randint(0, VOCAB, (n, args.seq), device=args.device)
    ids[args.pairs :, :prompt] = ids[: args.pairs, :prompt]  # chosen and rejected share the prompt
    labels = ids.clone()
    labels[:, :prompt] = -100
    rows, positions, targets = labelled_positions(labels)
    batch_targets = (rows * args.seq + positions, targets, rows)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def iteration() -> None:
        optimizer.zero_grad(set_to_none=True)
        stats = SequenceLogps(*getattr(policy, METHOD_NAME)(inputs, batch_targets, n))
        chosen, rejected = stats.split(args.pairs)
        margin = 2.0 * (chosen.logp_mean - rejected.logp_mean) - 1.0
        (-torch.nn.functional.logsigmoid(margin).mean()).backward()
        optimizer.step()

    return iteration, int(targets.numel())


def make_iteration(args: argparse.Namespace, what: str, mode: str) -> tuple[Callable[[], None], int]:
    return (head_iteration if what == "head" else step_iteration)(args, mode)


def synchronize(args: argparse.Namespace) -> None:
    if args.device == "cuda":
        torch.cuda.synchronize()


def memory_child(args: argparse.Namespace, what: str, mode: str) -> dict[str, Any]:
    """Peak memory of one iteration of ``what`` under ``mode``, and its rise over the memory before it."""
    iteration, tokens = make_iteration(args, what, mode)
    synchronize(args)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        floor = torch.cuda.memory_allocated() / 2**20
    else:
        floor = vm_rss_mib()
    iteration()
    synchronize(args)
    if args.device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_mib": peak, "rise_mib": peak - floor, "tokens": tokens}


def time_child(args: argparse.Namespace, what: str, modes: list[str]) -> dict[str, list[float]]:
    """Seconds per timed iteration of each mode, the modes alternating iteration by iteration."""
    iterations = {mode: make_iteration(args, what, mode)[0] for mode in modes}
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for round_index in range(args.warmup + args.repeats):
        for mode, iteration in iterations.items():
            synchronize(args)
            start = time.perf_counter()
            iteration()
            synchronize(args)
            if round_index >= args.warmup:
                times[mode].append(time.perf_counter() - start)
    return times


def run_child(argv: list[str], kind: str, what: str, mode: str) -> Any:
    out = subprocess.run([sys.executable, __file__, *argv, "--child", kind, what, mode], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} {what} {mode} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.child:
        kind, what, modes = args.child
        result = memory_child(args, what, modes) if kind == "memory" else time_child(args, what, modes.split(","))
        print(json.dumps(result))
        return
    modes = args.modes.split(",")
    unknown = sorted(set(modes) - set(HEAD_BACKWARDS))
    if unknown:
        raise SystemExit(f"--modes: unknown {unknown}; choose from {list(HEAD_BACKWARDS)}")
    what_list = args.only or ["head", "step"]
    memory = "peak CUDA MiB" if args.device == "cuda" else "peak RSS MiB"
    print(f"device {args.device}, {args.dtype}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"vocabulary {VOCAB}, chunk_size {args.chunk_size}, median of {args.repeats} after {args.warmup} "
          "warm-up")  # fmt: skip
    print(f"\n| measurement | head_backward | M scored tokens | s (median) | timed s | {memory} | rise MiB |")
    print("|---|---|---:|---:|---|---:|---:|")
    for what in what_list:
        shape = f"head, H={args.hidden}" if what == "head" else f"step, {args.pairs} pairs x {args.seq}"
        times = run_child(argv, "time", what, ",".join(modes))
        for mode in modes:
            r = run_child(argv, "memory", what, mode)
            spread = " ".join(f"{s:.2f}" for s in times[mode])
            print(f"| {shape} | {mode} | {r['tokens']} | {statistics.median(times[mode]):.2f} | {spread} | "
                  f"{r['peak_mib']:.0f} | {r['rise_mib']:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
