"""The GPU checks that compare variants of one training step in-process (``step_bench.py``), registered in
``checks.py`` after check b: QLoRA, the batch layouts, the head's modes, the reference modes, LoRA against full
fine-tuning. Each runs its variants one after another in its own process, skips a variant it has no time left for
(saying so), and keeps every finished variant's numbers when a later one fails.

Top-level imports are the standard library only: ``run_checks.py`` imports ``checks.py``, which imports this file.
"""

from __future__ import annotations

import math
from typing import Any

LOSS_TOL = {"bf16-mixed": 1e-2, "32-true": 1e-4}  # step-0 losses of equivalent variants, relative to max(1, |ref|)
TIME_MARGIN = 1.3  # a variant is started only with this times the slowest finished variant's wall time left


def compare(ctx: Any, size: Any, variants: list[Any], data_dir: Any) -> list[dict[str, Any]]:
    """Run ``variants`` in order (table and results rewritten after each); returns their summaries."""
    from step_bench import release, run_variant, variants_table

    runs: list[dict[str, Any]] = []
    for variant in variants:
        slowest = max((r.get("wall_s", 0) for r in runs), default=0)
        if runs and ctx.remaining() < TIME_MARGIN * slowest + 5:
            runs.append({"name": variant.name, "status": f"not run: {ctx.remaining():.0f} s left"})
            continue
        ctx.log(f"{variant.name}: {size.model}, {size.pairs} pairs x {size.seq} tokens, {size.precision}")
        run = release(run_variant(size, variant, data_dir, ctx.work, ctx.device))
        ctx.log(f"{variant.name}: {run['status']}, {run.get('step_s') or 0:.3f} s/step, peak {run.get('peak_gb')} GB")
        runs.append(run)
        ctx.update(size=size.__dict__, runs=runs)
        ctx.table("runs", variants_table(runs))
    return runs


def run_errors(runs: list[dict[str, Any]]) -> list[str]:
    return [f"{r['name']}: {r['status']}" for r in runs if r["status"] != "ok"]


def same_first_loss(runs: list[dict[str, Any]], tol: float, expected: float | None = None) -> list[str]:
    """Failures: a finished run whose step-0 loss differs from ``expected`` (default: the first run's) by more than
    ``tol`` relative to max(1, |expected|)."""
    done = [r for r in runs if r["status"] == "ok"]
    if not done:
        return []
    ref = done[0]["losses"][0] if expected is None else expected
    failures = []
    for r in done:
        error = abs(r["losses"][0] - ref) / max(1.0, abs(ref))
        r["first_loss_error"] = error
        if error > tol:
            failures.append(f"{r['name']}: step-0 loss {r['losses'][0]:.6f} vs {ref:.6f} (error {error:.1e} > {tol:g})")
    return failures


def ratio(runs: list[dict[str, Any]], name: str, key: str, base: str) -> float | None:
    by = {r["name"]: r for r in runs}
    a, b = by.get(name, {}).get(key), by.get(base, {}).get(key)
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def fmt_ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "n/a"


# ----------------------------------------------------------------------------------------------- d. QLoRA


def qlora(ctx: Any) -> None:
    """A tiny pretrained Llama (hidden 64, 2 layers, Llama 3 vocabulary, written with ``save_pretrained``) loaded in
    4-bit NF4 with bf16 compute (``peft=qlora`` through ``simpo.models.adapters``: ``check_adapter_settings``,
    ``quantized_loading``, ``apply_adapters``) trains its LoRA adapters for 4 SimPO steps in bf16-mixed (4 pairs x
    128 tokens): every projection in 4 bits, losses finite, the adapters moved, the 4-bit base unchanged, peak memory.
    Without CUDA: ``peft=qlora`` must be refused, and the same path trains with ``peft=lora`` (rehearsal)."""
    import importlib.metadata as md

    import lightning as L
    import torch
    from step_bench import TINY_LLAMA, BenchSize, Variant, release, run_variant, synthetic_data, variants_table

    from data.tokenizers import load_tokenizer
    from simpo.models.adapters import check_adapter_settings
    from simpo.models.policy import build_policy

    size = BenchSize("micro", 128, 4, 4, 1, "bf16-mixed" if ctx.cuda else "32-true", chunk_size=64,
                     checkpointing=False)  # fmt: skip
    tokenizer = load_tokenizer("llama3")
    base = ctx.work / "qlora-base"
    L.seed_everything(0, verbose=False)
    build_policy(tokenizer, architecture=dict(TINY_LLAMA)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    notes: dict[str, Any] = {"base": str(base)}
    if ctx.cuda:
        try:
            import bitsandbytes  # noqa: F401  (transformers imports it when the 4-bit base loads)

            notes["bitsandbytes"] = md.version("bitsandbytes")
        except Exception as error:
            ctx.update(**notes, bitsandbytes_error=f"{type(error).__name__}: {error}")
            ctx.finish("skipped: bitsandbytes not available", f"{type(error).__name__}: {error}")
            return
        method = "qlora"
    else:
        try:
            check_adapter_settings({"method": "qlora"}, str(base), False, "cpu")
            notes["qlora_refused_on_cpu"] = None
        except ValueError as error:
            notes["qlora_refused_on_cpu"] = str(error)
        method = "lora"  # the rehearsal: the same load -> adapters -> train path, full-precision base
    ctx.update(**notes)
    data_dir = synthetic_data(ctx.work, size.seq, size.pairs * (size.steps + 2))
    variant = Variant(f"{method} r16", peft={"method": method}, name_or_path=str(base), lr=1e-3)
    run = run_variant(size, variant, data_dir, ctx.work, ctx.device)
    module = run.get("module")
    failures: list[str] = []
    if module is not None:
        policy = module.policy
        quantized = [n for n, m in policy.named_modules() if type(m).__name__ == "Linear4bit"]
        lora_b = [p for n, p in policy.named_parameters() if "lora_B" in n]
        run.update(
            linear4bit_modules=len(quantized),
            adapters_moved=bool(lora_b) and all(bool(p.detach().abs().sum() > 0) for p in lora_b),
            trainable_fraction=run["trainable_params"] / run["params"],
        )
        if not run["adapters_moved"]:
            failures.append("some lora_B weights are still zero after training (no gradient reached them)")
        expected = 7 * TINY_LLAMA["num_hidden_layers"] if method == "qlora" else 0
        if len(quantized) != expected:
            failures.append(f"{len(quantized)} Linear4bit layers, expected {expected}")
        if method == "qlora":
            frozen = [p for n, p in policy.named_parameters() if "lora_" not in n and p.requires_grad]
            if frozen:
                failures.append(f"{len(frozen)} base parameters are trainable")
    if not ctx.cuda and not notes.get("qlora_refused_on_cpu"):
        failures.append("peft=qlora was not refused on the CPU")
    runs = [release(run)]
    ctx.update(runs=runs, size=size.__dict__)
    ctx.table("runs", variants_table(runs))
    losses = ", ".join(f"{v:.4f}" for v in run.get("losses") or [] if v is not None)
    memory = f", peak {run['peak_gb']:.2f} GB" if run.get("peak_gb") is not None else ""
    summary = (
        f"{method}: {run.get('linear4bit_modules', 0)} layers in NF4, losses {losses} (finite), "
        f"{run.get('trainable_fraction', 0):.2%} trainable{memory}; torch {torch.__version__}"
    )
    ctx.judge(failures, summary, run_errors(runs))


# ----------------------------------------------------------------------------------------------- e. layouts


def layouts(ctx: Any) -> None:
    """Issue 11's GPU comparison of ``data.layout``: the 1B Llama shape, bf16-mixed, 2 pairs x 2048 tokens per step,
    activation checkpointing, attention chosen as ``train.py`` does (``model.attn_implementation=auto``: SDPA for
    ``padded`` without flash-attn, FlexAttention's block-sparse kernel for the packed and shared-prompt layouts):
    step time, tokens/s (the pairs' real tokens) and peak memory of ``padded``, ``shared_prompt_packed`` and
    ``packed``; their step-0 losses must agree (same weights, same pairs)."""
    from step_bench import Variant, bench_size, synthetic_data

    size = bench_size(ctx.cuda, ctx.quick)
    data_dir = synthetic_data(ctx.work, size.seq, size.pairs * (size.steps + 2))
    names = ("padded", "shared_prompt_packed", "packed")
    runs = compare(ctx, size, [Variant(n, layout=n) for n in names], data_dir)
    failures = same_first_loss(runs, LOSS_TOL[size.precision])
    speed = ", ".join(f"{n} {fmt_ratio(ratio(runs, n, 'tokens_per_sec', 'padded'))}" for n in names[1:])
    memory = ", ".join(f"{n} {fmt_ratio(ratio(runs, n, 'peak_gb', 'padded'))}" for n in names[1:])
    ctx.update(tokens_per_sec_vs_padded=speed, peak_vs_padded=memory)
    ctx.judge(failures, f"tokens/s vs padded: {speed}; peak memory vs padded: {memory}", run_errors(runs))


# ----------------------------------------------------------------------------------------------- c. the head


def chunked_head(ctx: Any) -> None:
    """The head at 1B and 2048 tokens (bf16-mixed, activation checkpointing, 2 pairs): the labelled-only chunked
    head (``model.chunk_size=1024``) with ``model.head_backward=recompute`` (the default) and ``store``, against full
    (2B, T, V) logits (``model.chunk_size=null``): step time and peak memory; step-0 losses must agree, and full
    logits must take at least the chunked head's memory."""
    from step_bench import Variant, bench_size, synthetic_data

    size = bench_size(ctx.cuda, ctx.quick)
    data_dir = synthetic_data(ctx.work, size.seq, size.pairs * (size.steps + 2))
    variants = [
        Variant("chunked recompute"),
        Variant("chunked store", head_backward="store"),
        Variant("full logits", full_logits=True),
    ]
    runs = compare(ctx, size, variants, data_dir)
    failures = same_first_loss(runs, LOSS_TOL[size.precision])
    store_time = ratio(runs, "chunked store", "step_s", "chunked recompute")
    store_memory = ratio(runs, "chunked store", "peak_gb", "chunked recompute")
    full_memory = ratio(runs, "full logits", "peak_gb", "chunked recompute")
    full_time = ratio(runs, "full logits", "step_s", "chunked recompute")
    ctx.update(store_over_recompute_step_time=store_time, store_over_recompute_memory=store_memory,
               full_over_chunked_memory=full_memory, full_over_chunked_step_time=full_time)  # fmt: skip
    if ctx.cuda and full_memory is not None and full_memory < 1.0:
        failures.append(f"the chunked head used more memory than full logits ({1 / full_memory:.2f}x)")
    ctx.judge(
        failures,
        f"store vs recompute: {fmt_ratio(store_time)} step time, {fmt_ratio(store_memory)} peak memory; full logits vs "
        f"chunked: {fmt_ratio(full_time)} step time, {fmt_ratio(full_memory)} peak memory",
        run_errors(runs),
    )


# ----------------------------------------------------------------------------------------------- f. reference


def dpo_reference(ctx: Any) -> None:
    """What a reference costs on the GPU (1B, bf16-mixed, 2048 tokens, 2 pairs): SimPO, DPO with
    ``reference=cached`` (one no-grad pass over the pairs before the first step, timed apart) and DPO with
    ``reference=model`` (a frozen copy beside the policy): step time and peak memory. Both DPO runs start with the
    policy equal to its reference, so their step-0 loss must be ln 2."""
    from step_bench import Variant, bench_size, synthetic_data

    size = bench_size(ctx.cuda, ctx.quick)
    data_dir = synthetic_data(ctx.work, size.seq, size.pairs * (size.steps + 2))
    variants = [
        Variant("simpo"),
        Variant("dpo cached", loss="dpo", reference="cached"),
        Variant("dpo model", loss="dpo", reference="model"),
    ]
    runs = compare(ctx, size, variants, data_dir)
    failures = same_first_loss([r for r in runs if r["name"] != "simpo"], LOSS_TOL[size.precision], math.log(2))
    parts = []
    for name in ("dpo cached", "dpo model"):
        time_ratio = ratio(runs, name, "step_s", "simpo")
        memory_ratio = ratio(runs, name, "peak_gb", "simpo")
        ctx.update(**{f"{name} vs simpo": {"step_time": time_ratio, "peak_memory": memory_ratio}})
        parts.append(f"{name}: {fmt_ratio(time_ratio)} step time, {fmt_ratio(memory_ratio)} peak memory")
    cached = next((r for r in runs if r["name"] == "dpo cached"), {})
    if cached.get("reference_pass_s") is not None:
        parts.append(f"cached pass {cached['reference_pass_s']:.1f} s once")
    ctx.judge(failures, "vs SimPO: " + "; ".join(parts), run_errors(runs))


# ----------------------------------------------------------------------------------------------- g. LoRA vs full


def lora_vs_full(ctx: Any) -> None:
    """LoRA (r 16 on every projection, the frozen base in bf16 on a GPU) against full fine-tuning (fp32 master
    weights) at 1B, bf16-mixed, 2048 tokens, 2 pairs: trainable parameters, step time and peak memory."""
    from step_bench import Variant, bench_size, synthetic_data

    size = bench_size(ctx.cuda, ctx.quick)
    data_dir = synthetic_data(ctx.work, size.seq, size.pairs * (size.steps + 2))
    base_dtype = "bfloat16" if ctx.cuda else "float32"
    variants = [Variant("full"), Variant("lora r16", peft={"method": "lora"}, dtype=base_dtype, lr=1e-4)]
    runs = compare(ctx, size, variants, data_dir)
    failures = []
    lora = next((r for r in runs if r["name"] == "lora r16" and r["status"] == "ok"), None)
    if lora is not None and lora["trainable_params"] >= 0.05 * lora["params"]:
        failures.append(f"LoRA trains {lora['trainable_params'] / lora['params']:.1%} of the parameters")
    memory = ratio(runs, "lora r16", "peak_gb", "full")
    step = ratio(runs, "lora r16", "step_s", "full")
    if ctx.cuda and memory is not None and memory >= 1.0:
        failures.append(f"LoRA's peak memory is {memory:.2f}x full fine-tuning's")
    ctx.update(lora_over_full_memory=memory, lora_over_full_step_time=step)
    share = f"{lora['trainable_params'] / lora['params']:.2%} trainable, " if lora else ""
    ctx.judge(failures, f"LoRA: {share}{fmt_ratio(step)} step time, {fmt_ratio(memory)} peak memory of full",
              run_errors(runs))  # fmt: skip
