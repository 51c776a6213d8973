"""The GPU check of FlexAttention's training kernels (registered in ``checks.py`` right after check a, before any 1B
run): seconds on a micro Llama tell a kernel bug apart from a slow compile or a timeout in the 1B comparisons.

Top-level imports are the standard library only: ``run_checks.py`` imports ``checks.py``, which imports this file.
"""

from __future__ import annotations

import time
from typing import Any

FLEX_SEQ = 256  # data.max_length of the micro check: pair rows of about 450 tokens, two to a packed row of 1024
FLEX_PACK = 1024  # data.pack_length
FLEX_MULTIPLE = 128  # data.pad_to_multiple_of: FlexAttention's block size, so row lengths (and compiles) stay few
FLEX_PAIRS = 4  # pairs per batch
FLEX_BATCHES = 3  # batches compared: the first compiles, the next lengths show whether it compiles again
# Bounds against SDPA with the dense mask (relative to max(1, |loss|), and ||g - g_sdpa|| / ||g_sdpa||).
FLEX_TOL = {"fp32": (1e-4, 1e-3), "bf16 autocast": (1e-2, 5e-2)}


def flex_batches(tokenizer: Any, work: Any) -> list[dict[str, Any]]:
    """The first ``FLEX_BATCHES`` training batches of synthetic pairs in ``shared_prompt_packed`` (several pairs per
    row, prompts once), row lengths rounded up to ``FLEX_MULTIPLE``, through the project's data module."""
    from step_bench import SEED, synthetic_data

    from data.datamodule import PreferenceDataModule

    data_dir = synthetic_data(work, FLEX_SEQ, FLEX_PAIRS * FLEX_BATCHES)
    module = PreferenceDataModule(
        tokenizer,
        str(data_dir),
        test_split=None,
        max_length=FLEX_SEQ,
        max_prompt_length=FLEX_SEQ // 4,
        batch_size=FLEX_PAIRS,
        layout="shared_prompt_packed",
        pack_length=FLEX_PACK,
        pad_to_multiple_of=FLEX_MULTIPLE,
        seed=SEED,
    )
    module.prepare_data()
    module.load("fit")
    batches = []
    for batch in module.train_dataloader():
        batches.append(batch)
        if len(batches) == FLEX_BATCHES:
            break
    return batches


def loss_and_grads(module: Any, batch: dict[str, Any], device: str, autocast: bool) -> tuple[float, dict, float]:
    """SimPO's loss on ``batch`` through ``module.pair_logps`` (the training step's scoring), its gradients (float64
    on the CPU) and the seconds the forward and backward took (device synchronised)."""
    import torch

    moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    module.policy.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
        pair, _, _ = module.pair_logps(moved)
        loss = module.loss_fn(pair).loss
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    params = module.policy.named_parameters()
    grads = {n: p.grad.detach().to("cpu", torch.float64) for n, p in params if p.grad is not None}
    return float(loss.detach()), grads, seconds


def flex_attention(ctx: Any) -> None:
    """FlexAttention's forward and backward on a micro Llama (hidden 64, 2 layers, the Llama 3 vocabulary) in
    ``data.layout=shared_prompt_packed`` (two pairs per 1,024-token row, the prompt once, row lengths padded to a
    multiple of 128), against the same weights with SDPA and the dense (R, 1, T, T) mask of the same rule: SimPO's
    loss and every gradient, in fp32 and under bf16 autocast, on 3 batches of different lengths. The first batch's
    time includes compiling the kernels (forward and backward); the later ones show whether a new length compiles
    again. Without CUDA both sides run SDPA (FlexAttention has no CPU backward): the same code path, rehearsed."""
    import torch
    from step_bench import SEED, TINY_LLAMA, grad_error

    from data.tokenizers import load_tokenizer
    from simpo.models.policy import build_policy
    from simpo.objectives import SimPO
    from simpo.training.module import SimPOModule

    started = time.perf_counter()
    tokenizer = load_tokenizer("llama3")
    batches = flex_batches(tokenizer, ctx.work)
    shapes = [list(b["input_ids"].shape) for b in batches]
    ctx.log(f"{len(batches)} batches {shapes} in {time.perf_counter() - started:.1f} s")
    kernel = "flex_attention" if ctx.cuda else "sdpa"

    def module(attention: str) -> Any:
        torch.manual_seed(SEED)
        with torch.device(ctx.device):
            policy = build_policy(tokenizer, architecture=dict(TINY_LLAMA), dtype="float32",
                                  attn_implementation=attention, layout="shared_prompt_packed")  # fmt: skip
        return SimPOModule(policy, SimPO(beta=2.0, gamma_beta_ratio=0.5), chunk_size=256, warmup_ratio=0.0)

    tested, dense = module(kernel), module("sdpa")
    dense.policy.load_state_dict(tested.policy.state_dict())
    ctx.update(kernel=kernel, batch_shapes=shapes, pad_to_multiple_of=FLEX_MULTIPLE, pack_length=FLEX_PACK)
    modes = [("fp32", False), ("bf16 autocast", True)] if ctx.cuda or not ctx.quick else [("fp32", False)]
    rows, failures, results = [], [], []
    for mode, autocast in modes:
        loss_tol, grad_tol = FLEX_TOL[mode]
        for index, batch in enumerate(batches):
            loss, grads, seconds = loss_and_grads(tested, batch, ctx.device, autocast)
            ref_loss, ref_grads, ref_seconds = loss_and_grads(dense, batch, ctx.device, autocast)
            loss_error = abs(loss - ref_loss) / max(1.0, abs(ref_loss))
            gradient_error = grad_error(grads, ref_grads)
            ok = loss_error <= loss_tol and gradient_error <= grad_tol
            results.append({"mode": mode, "batch": index, "shape": shapes[index], "loss": loss, "sdpa_loss": ref_loss,
                            "loss_error": loss_error, "grad_error": gradient_error, "seconds": seconds,
                            "sdpa_seconds": ref_seconds, "ok": ok})  # fmt: skip
            ctx.log(f"{mode} batch {index} {shapes[index]}: loss {loss:.6f} vs {ref_loss:.6f}, gradients "
                    f"{gradient_error:.1e}, {seconds:.2f} s ({ref_seconds:.2f} s with SDPA)")  # fmt: skip
            if not ok:
                failures.append(f"{mode} batch {index}: loss error {loss_error:.1e} (<= {loss_tol:g}), gradient "
                                f"error {gradient_error:.1e} (<= {grad_tol:g})")  # fmt: skip
            rows.append(f"| {mode} | {index} | {shapes[index][0]} x {shapes[index][1]} | {loss:.6f} | "
                        f"{loss_error:.1e} | {gradient_error:.1e} | {seconds:.2f} | {ref_seconds:.2f} | "
                        f"{'ok' if ok else 'FAIL'} |")  # fmt: skip
            ctx.update(runs=results)
    # The first batch of a mode compiles its kernels (each dtype its own); the last shows the compiled speed.
    by_mode = {mode: [r["seconds"] for r in results if r["mode"] == mode] for mode, _ in modes}
    compile_s = {mode: round(max(s[0] - s[-1], 0.0), 2) for mode, s in by_mode.items() if len(s) > 1}
    ctx.update(compile_s=compile_s)
    ctx.table("flex_attention", "\n".join([
        f"{kernel} against SDPA with the dense mask, micro Llama (hidden 64, 2 layers, vocabulary {len(tokenizer)}), "
        f"{FLEX_PAIRS} pairs per batch, shared_prompt_packed, pack_length {FLEX_PACK}, pad_to_multiple_of "
        f"{FLEX_MULTIPLE}. Errors: |loss - sdpa| / max(1, |sdpa|), ||g - g_sdpa|| / ||g_sdpa||; seconds of one "
        "forward and backward (the first includes compiling).",
        "",
        "| mode | batch | rows x length | loss | loss error | gradient error | s | s (SDPA) | |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|",
        *rows,
    ]))  # fmt: skip
    compiled = "".join(f", {mode} compile about {s:.0f} s" for mode, s in compile_s.items()) if ctx.cuda else ""
    ctx.judge(failures, f"{kernel} equals SDPA's dense mask on {len(results)} forward/backward passes{compiled}")
