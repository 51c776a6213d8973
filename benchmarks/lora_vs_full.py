"""LoRA against full fine-tuning on the same model and data: trainable parameters, training-state memory, peak memory
and step time; and the recipe-sized estimate (8B: full vs LoRA vs QLoRA memory per GPU) from the model's shape.

    python benchmarks/lora_vs_full.py                      # Llama shape, hidden 512, 6 layers, Llama 3 vocabulary
    python benchmarks/lora_vs_full.py --steps 3 --hidden 64 --layers 2    # quick

Each configuration runs in its own process (so its peak RSS is its own): SimPO steps (the labelled-only head) on
random token pairs, AdamW. ``state MiB`` is measured exactly from the tensors after the steps: parameters + gradients
+ AdamW moments; ``estimate MiB`` is ``training_state_bytes`` from the shape alone (the same accounting that gives the
8B table). On a GPU, peak is ``torch.cuda.max_memory_allocated``; on the CPU, the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GIB = 1024**3
MIB = 1024**2
LORA_PROJECTIONS = 7  # q, k, v, o, gate, up, down: every linear projection of a Llama decoder layer
NF4_BYTES = 0.5 + (8 / 64 + 32 / (64 * 256)) / 8  # 4 bits + double-quantised absmax (8 bits per 64, fp32 per 256 x 64)


@dataclass(frozen=True)
class LlamaShape:
    """The fields of a Llama-style config that set its parameter count."""

    vocab: int
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    tied: bool

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    def layer_linear_params(self) -> int:
        """Weights of one decoder layer's seven projections (no biases in Llama)."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        return 2 * h * h + 2 * h * kv + 3 * h * i

    def embedding_params(self) -> int:
        """Input embedding plus output head (once when tied)."""
        return self.vocab * self.hidden * (1 if self.tied else 2)

    def total_params(self) -> int:
        norms = (2 * self.layers + 1) * self.hidden
        return self.layers * self.layer_linear_params() + self.embedding_params() + norms

    def lora_params(self, r: int) -> int:
        """A (r x in) and B (out x r) of every projection of every layer."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        per_layer = r * ((h + h) + 2 * (h + kv) + (h + h) + 2 * (h + i) + (i + h))
        return self.layers * per_layer


LLAMA3_8B = LlamaShape(vocab=128256, hidden=4096, layers=32, intermediate=14336, heads=32, kv_heads=8, tied=False)


def training_state_bytes(shape: LlamaShape, method: str, r: int = 16, base_bytes: int = 2, devices: int = 1) -> float:
    """Bytes per device of the weights, gradients and AdamW state (activations excluded) for ``method``.

    Args:
        method: ``full`` (fp32 master weights, fp32 gradients, two fp32 AdamW moments: 16 bytes per parameter,
            sharded over ``devices`` by FSDP), ``lora`` (the frozen base at ``base_bytes`` per parameter plus
            16 bytes per adapter parameter) or ``qlora`` (the decoder projections in NF4 with double quantisation,
            embeddings, head and norms upcast to fp32 by peft's k-bit preparation, plus the adapters).
        base_bytes: bytes per frozen base parameter for ``lora`` (2: bf16, 4: fp32).
        devices: FSDP shards (``full`` only; adapter runs here keep the whole base on each device).
    """
    total = shape.total_params()
    if method == "full":
        return 16 * total / devices
    adapters = 16 * shape.lora_params(r)
    if method == "lora":
        return base_bytes * total + adapters
    if method == "qlora":
        quantized = shape.layers * shape.layer_linear_params()
        return NF4_BYTES * quantized + 4 * (total - quantized) + adapters
    raise ValueError(f"method must be full, lora or qlora, not {method!r}")


def measured_state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Exact bytes of the parameters, their gradients and the optimizer's tensors."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    state = sum(
        t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)
    )
    return params + grads + state


def run_one(config: dict, queue: multiprocessing.Queue) -> None:
    """Train ``config['steps']`` SimPO steps of ``config['method']`` and put the measurements on ``queue``."""
    import torch.nn.functional as F

    from data.tokenizers import load_tokenizer
    from simpo.core.labelled_head import attach_labelled_logps
    from simpo.models.adapters import AdapterSettings, apply_adapters
    from simpo.models.policy import build_policy
    from simpo.training.optim import build_optimizer

    torch.manual_seed(0)
    torch.set_num_threads(config["threads"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = load_tokenizer("llama3")
    s = LlamaShape(**config["shape"])
    arch = {"model_type": "llama", "hidden_size": s.hidden, "num_hidden_layers": s.layers,
            "intermediate_size": s.intermediate, "num_attention_heads": s.heads, "num_key_value_heads": s.kv_heads,
            "tie_word_embeddings": s.tied, "max_position_embeddings": 4096}  # fmt: skip
    policy = build_policy(tokenizer, architecture=arch)
    if config["method"] == "lora":
        policy = apply_adapters(policy, AdapterSettings(r=config["r"], alpha=2 * config["r"]))
    policy.to(device).train()
    attach_labelled_logps(policy, chunk_size=1024)
    optimizer, _ = build_optimizer(policy, 1e-4, 0.0, (0.9, 0.999), 1e-8, 0.0, total_steps=config["steps"] + 2)
    pairs, length = config["pairs"], config["length"]
    ids = torch.randint(0, s.vocab, (2 * pairs, length), device=device)
    rows = torch.arange(2 * pairs, device=device).repeat_interleave(length // 2)
    positions = torch.arange(length // 2, length, device=device).repeat(2 * pairs)
    targets = (rows * length + positions - 1, ids[rows, positions], rows)
    times = []
    for step in range(config["steps"] + 2):  # two warm-up steps, not timed
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        logp_sum, count, _ = policy.simpo_labelled_logps({"input_ids": ids}, targets, 2 * pairs)
        mean = logp_sum / count
        loss = -F.logsigmoid(2.0 * (mean[:pairs] - mean[pairs:]) - 1.0).mean()
        loss.backward()
        optimizer.step()
        if step < config["steps"] + 1:
            optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= 2:
            times.append(time.perf_counter() - start)
    peak = (
        torch.cuda.max_memory_allocated()
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    queue.put({
        "method": config["method"],
        "params": sum(p.numel() for p in policy.parameters()),
        "trainable": sum(p.numel() for p in policy.parameters() if p.requires_grad),
        "state_bytes": measured_state_bytes(policy, optimizer),
        "peak_bytes": peak,
        "step_s": sorted(times)[len(times) // 2],
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
    })  # fmt: skip


def measure(config: dict) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=run_one, args=(config, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def estimate_table(r: int = 16) -> str:
    """The 8B table: training state per GPU (GiB), activations excluded."""
    s = LLAMA3_8B
    rows = [
        ("full fine-tuning, 1 GPU", training_state_bytes(s, "full")),
        ("full fine-tuning, FSDP over 8 GPUs", training_state_bytes(s, "full", devices=8)),
        (f"LoRA r={r}, bf16 base (model.dtype=bfloat16)", training_state_bytes(s, "lora", r, base_bytes=2)),
        (f"LoRA r={r}, fp32 base (model.dtype=float32)", training_state_bytes(s, "lora", r, base_bytes=4)),
        (f"QLoRA r={r} (NF4 base)", training_state_bytes(s, "qlora", r)),
    ]
    lines = [f"Llama 3 8B shape: {s.total_params() / 1e9:.2f}B parameters, LoRA r={r}: {s.lora_params(r) / 1e6:.1f}M "
             f"trainable ({100 * s.lora_params(r) / s.total_params():.2f}%)", "",
             "| setting | weights + grads + AdamW per GPU, GiB |", "|---|---:|"]  # fmt: skip
    lines += [f"| {name} | {value / GIB:.1f} |" for name, value in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    args = parser.parse_args()
    heads = max(1, args.hidden // 64)
    shape = LlamaShape(vocab=128256, hidden=args.hidden, layers=args.layers, intermediate=round(args.hidden * 8 / 3),
                       heads=heads, kv_heads=max(1, heads // 4), tied=True)  # fmt: skip
    base = {"shape": shape.__dict__, "r": args.r, "pairs": args.pairs, "length": args.length, "steps": args.steps,
            "threads": args.threads}  # fmt: skip
    results = [measure({**base, "method": method}) for method in ("full", "lora")]
    print(f"Llama shape hidden {args.hidden}, {args.layers} layers, vocabulary {shape.vocab} (tied), "
          f"{args.pairs} pairs x {args.length} tokens, fp32, median of {args.steps} steps, {results[0]['device']}, "
          f"{args.threads} threads\n")  # fmt: skip
    print("| run | parameters | trainable | state MiB | estimate MiB | peak MiB | step s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for res in results:
        kind = res["method"]
        estimate = training_state_bytes(shape, kind, args.r, base_bytes=4)
        name = "full fine-tuning" if kind == "full" else f"LoRA r={args.r}"
        print(f"| {name} | {res['params'] / 1e6:.1f}M | {res['trainable'] / 1e6:.2f}M "
              f"({100 * res['trainable'] / res['params']:.2f}%) | {res['state_bytes'] / MIB:.0f} | "
              f"{estimate / MIB:.0f} | {res['peak_bytes'] / MIB:.0f} | {res['step_s']:.3f} |")  # fmt: skip
    print()
    print(estimate_table(args.r))
    if args.json:
        args.json.write_text(json.dumps({"shape": shape.__dict__, "results": results}, indent=2))


if __name__ == "__main__":
    main()
