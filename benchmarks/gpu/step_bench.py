"""In-process step measurements for the GPU checks' comparisons (``comparisons.py``): one variant (objective and
reference, batch layout, head mode, adapters) trained for a few optimizer steps through the project's own objects
(``PreferenceDataModule``, ``build_policy``, ``simpo.models.adapters``, ``simpo.reference``, ``SimPOModule``,
Lightning's ``Trainer`` with the throughput callback and ``StepRecorder``), and summarised: median step time and
tokens/s over the steps after ``warmup``, peak allocated GPU memory during the fit, the losses.

Every variant of a comparison runs in the same process on identical weights (the global seed is reset before each
build), so their differences are the variant's; the memory floor before each fit is reported, so memory that an
earlier variant failed to release would show. Random weights are initialised on the device itself (seconds for
1.2B parameters on a GPU, instead of a minute on the CPU).
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import statistics
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[2]

TINY_LLAMA: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 192,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
}  # the bundled default (conf/model/tiny_llama.yaml)
SEED = 0


@dataclass(frozen=True)
class BenchSize:
    """The size of every variant of a comparison.

    Attributes:
        model: ``1b`` or ``tiny`` (``simpo_vs_trl.MODEL_SIZES``), or ``micro`` (``TINY_LLAMA``).
        seq: ``data.max_length`` (prompts about a quarter of it).
        pairs: pairs per optimizer step.
        steps: optimizer steps per variant; the first ``warmup`` are left out of the medians.
        precision: the trainer's precision.
        chunk_size: ``model.chunk_size`` of the labelled-only head.
        checkpointing: activation checkpointing (``model.gradient_checkpointing``).
    """

    model: str
    seq: int
    pairs: int
    steps: int
    warmup: int
    precision: str
    chunk_size: int = 1024
    checkpointing: bool = True

    def architecture(self) -> dict[str, Any]:
        if self.model == "micro":
            return dict(TINY_LLAMA)
        from simpo_vs_trl import MODEL_SIZES

        return dict(MODEL_SIZES[self.model])


def bench_size(cuda: bool, quick: bool) -> BenchSize:
    """On a GPU: the Llama 3.2 1B shape, 2 pairs x 2048 tokens, bf16-mixed, activation checkpointing (check b's
    ``sdpa-ckpt`` setting). Without one, a CPU rehearsal of the same code: fp32, 128 tokens, a tiny Llama."""
    if cuda:
        return BenchSize("1b", 2048, 2, 6, 2, "bf16-mixed")
    if quick:
        return BenchSize("micro", 128, 2, 2, 1, "32-true", chunk_size=64)
    return BenchSize("tiny", 128, 2, 3, 1, "32-true", chunk_size=64)


@dataclass(frozen=True)
class Variant:
    """One configuration to measure (the ``train.py`` keys it stands for in brackets).

    Attributes:
        name: its row in the table.
        loss: ``simpo`` (beta 2, gamma/beta 0.5) or ``dpo`` (beta 0.1) [``loss=``].
        reference: ``cached`` | ``model`` | ``adapter_off`` for DPO [``reference=``].
        layout: [``data.layout``].
        head_backward: [``model.head_backward``].
        full_logits: ``model.chunk_size=null`` instead of the size's chunk.
        peft: the ``peft`` group (``{"method": "lora"}``, ``{"method": "qlora"}``) or ``None`` [``peft=``].
        dtype: the weights' dtype [``model.dtype``] (a LoRA base is frozen, so bf16 loses no update).
        name_or_path: pretrained weights (QLoRA) instead of the size's random-initialised architecture.
        lr: AdamW's learning rate.
    """

    name: str
    loss: str = "simpo"
    reference: str | None = None
    layout: str = "padded"
    head_backward: str = "recompute"
    full_logits: bool = False
    peft: dict[str, Any] | None = None
    dtype: str = "float32"
    name_or_path: str | None = None
    lr: float = 1e-5
    extra: dict[str, Any] = field(default_factory=dict)


def synthetic_data(work: Path, seq: int, n_rows: int) -> Path:
    """A data directory holding ``train_prefs.jsonl`` with at least ``n_rows`` synthetic preference rows of about
    ``seq`` tokens (``simpo_vs_trl.synthesise_rows``), written once per ``seq`` and reused by every check."""
    data_dir = work / f"data-{seq}"
    path = data_dir / "train_prefs.jsonl"
    if not path.is_file() or len(path.read_text().splitlines()) < n_rows:
        from simpo_vs_trl import synthesise_rows

        from data.tokenizers import load_tokenizer

        rows = synthesise_rows(n_rows, seq, load_tokenizer("llama3"), seed=0)
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
        tmp.replace(path)
    return data_dir


def data_module(size: BenchSize, variant: Variant, data_dir: Path, tokenizer: Any, device: str = "cpu") -> Any:
    """The ``PreferenceDataModule`` of ``data_dir`` (training split only) in the variant's layout, loaded. On CUDA the
    packed and shared-prompt layouts (FlexAttention) round row lengths up to a multiple of 128, its block size, so
    that the kernels compile for few lengths (``data.pad_to_multiple_of=128``, as docs/performance.md advises)."""
    from data.datamodule import PreferenceDataModule

    module = PreferenceDataModule(
        tokenizer,
        str(data_dir),
        test_split=None,
        max_length=size.seq,
        max_prompt_length=size.seq // 4,
        batch_size=size.pairs,
        layout=variant.layout,
        pad_to_multiple_of=128 if device == "cuda" and variant.layout != "padded" else None,
        seed=SEED,
    )
    module.prepare_data()
    module.load("fit")
    return module


def _objective(variant: Variant) -> Any:
    from simpo.objectives import DPO, SimPO

    if variant.loss == "simpo":
        return SimPO(beta=2.0, gamma_beta_ratio=0.5)
    if variant.loss == "dpo":
        return DPO(beta=0.1)
    raise ValueError(f"unknown loss {variant.loss!r}")


def build_variant_policy(size: BenchSize, variant: Variant, tokenizer: Any, device: str) -> torch.nn.Module:
    """The variant's policy, as ``train.build_module`` builds it: random weights of the size's architecture
    (initialised on ``device``, seeded) or ``name_or_path`` (4-bit for QLoRA), then the LoRA adapters."""
    from simpo.models.adapters import apply_adapters, check_adapter_settings, quantized_loading
    from simpo.models.policy import build_policy

    adapters = None
    if variant.peft is not None:
        accelerator = "gpu" if device == "cuda" else "cpu"
        adapters = check_adapter_settings(variant.peft, variant.name_or_path, False, accelerator)
    L.seed_everything(SEED, verbose=False)
    where = torch.device(device) if variant.name_or_path is None else contextlib.nullcontext()
    with where:
        policy = build_policy(
            tokenizer,
            name_or_path=variant.name_or_path,
            architecture=None if variant.name_or_path else size.architecture(),
            dtype=variant.dtype,
            gradient_checkpointing=size.checkpointing,
            layout=variant.layout,
            load_kwargs=quantized_loading(adapters),
        )
    if adapters is not None:
        policy = apply_adapters(policy, adapters, size.checkpointing)
    return policy


def _reference(size: BenchSize, variant: Variant, objective: Any, datamodule: Any, tokenizer: Any, device: str) -> Any:
    """The reference provider of ``variant.reference`` (``simpo.reference.build``), its batches keyed by pair."""
    if not objective.needs_reference:
        return None
    from simpo.reference.build import build_reference, install_reference_collator, policy_identity

    reference_data = install_reference_collator(datamodule, objective, size.seq)
    data = {role: split["cache"]["fingerprint"] for role, split in datamodule.report["splits"].items()}
    parts = {"data": data, "dtype": variant.dtype, "precision": size.precision, "kl_pairs": False,
             "max_length": size.seq}  # fmt: skip
    source = policy_identity(variant.name_or_path, size.architecture(), SEED)
    provider = build_reference(
        variant.reference or "cached",
        {"name_or_path": None},
        lambda _name: build_variant_policy(size, replace(variant, peft=None), tokenizer, device),
        parts,
        source,
        reference_data,
    )
    if getattr(provider, "path", None) is not None:
        provider.path.unlink(missing_ok=True)  # measure the one-off pass, never a table an earlier run stored
    return provider


def grad_error(grads: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    """``||g - ref|| / ||ref||`` over all parameters (``inf`` when the names differ or ``ref`` is all zero)."""
    num = sum(float((grads[k] - ref[k]).pow(2).sum()) for k in ref)
    den = sum(float(ref[k].pow(2).sum()) for k in ref)
    return (num / den) ** 0.5 if set(grads) == set(ref) and den > 0 else float("inf")


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def run_variant(size: BenchSize, variant: Variant, data_dir: Path, work: Path, device: str) -> dict[str, Any]:
    """Train ``variant`` for ``size.steps`` optimizer steps; returns its summary (``status`` ``ok`` or the error)."""
    from benchmarks.gpu.step_recorder import StepRecorder
    from callbacks.throughput import ThroughputMonitor
    from data.tokenizers import load_tokenizer
    from simpo.training.module import SimPOModule

    summary: dict[str, Any] = {"name": variant.name, **{k: v for k, v in asdict(variant).items() if k != "name"}}
    cuda = device == "cuda"
    started = time.perf_counter()
    try:
        tokenizer = load_tokenizer("llama3")
        datamodule = data_module(size, variant, data_dir, tokenizer, device)
        objective = _objective(variant)
        reference = _reference(size, variant, objective, datamodule, tokenizer, device)
        policy = build_variant_policy(size, variant, tokenizer, device)
        summary["attn_implementation"] = policy.config._attn_implementation
        summary["params"] = sum(p.numel() for p in policy.parameters())
        summary["trainable_params"] = sum(p.numel() for p in policy.parameters() if p.requires_grad)
        module = SimPOModule(
            policy,
            objective,
            chunk_size=None if variant.full_logits else size.chunk_size,
            lr=variant.lr,
            warmup_ratio=0.0,
            tokenizer=tokenizer,
            head_backward=variant.head_backward,
            reference=reference,
        )
        steps_path = work / "steps" / f"{variant.name.replace(' ', '_').replace('/', '_')}.jsonl"
        steps_path.unlink(missing_ok=True)
        trainer = L.Trainer(
            accelerator="gpu" if cuda else "cpu",
            devices=1,
            precision=size.precision,
            max_steps=size.steps,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            log_every_n_steps=1,
            callbacks=[ThroughputMonitor(), StepRecorder(str(steps_path))],
        )
        if cuda:
            gc.collect()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            summary["floor_gb"] = torch.cuda.memory_allocated() / 2**30
        summary["build_s"] = time.perf_counter() - started
        fit_start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        summary["fit_s"] = time.perf_counter() - fit_start
        if cuda:
            summary["peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
            summary["peak_reserved_gb"] = torch.cuda.max_memory_reserved() / 2**30
        summary["reference_pass_s"] = getattr(reference, "computed_seconds", None)
        summary.update(summarise(steps_path, size.warmup))
        summary["status"] = "ok" if summary.get("steps_recorded") == size.steps else "error: steps missing"
        if summary["status"] == "ok" and not summary["losses_finite"]:
            summary["status"] = "error: non-finite loss"
        summary["module"] = module  # the caller may inspect the trained policy; dropped before reporting
    except Exception as error:  # one variant failing must not cost the others
        traceback.print_exc()
        summary["status"] = f"error: {type(error).__name__}: {str(error)[:300]}"
    summary["wall_s"] = time.perf_counter() - started
    return summary


def release(summary: dict[str, Any]) -> dict[str, Any]:
    """Drop the summary's trained module and free its memory before the next variant; returns the JSON-able rest."""
    summary.pop("module", None)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return summary


def summarise(steps_path: Path, warmup: int) -> dict[str, Any]:
    """Medians of the step recorder's lines after ``warmup`` steps, and every step's loss."""
    if not steps_path.is_file():
        return {"steps_recorded": 0, "losses": [], "losses_finite": False}
    records = [json.loads(line) for line in steps_path.read_text().splitlines() if line.strip()]
    steps = [r for r in records if r["event"] == "step"]
    measured = [r for r in steps if r["step"] >= warmup]
    losses = [r.get("train/loss") for r in steps]
    return {
        "steps_recorded": len(steps),
        "step_s": _median([r["step_s"] for r in measured]),
        "first_step_s": steps[0]["step_s"] if steps else None,
        "tokens_per_sec": _median([r["train/tokens_per_sec"] for r in measured if "train/tokens_per_sec" in r]),
        "losses": losses,
        "losses_finite": bool(losses) and all(v is not None and math.isfinite(v) for v in losses),
    }


def variants_table(runs: list[dict[str, Any]], baseline: str | None = None) -> str:
    """Markdown: one row per variant; ratios against ``baseline`` (default: the first run)."""
    base = next((r for r in runs if r["name"] == (baseline or runs[0]["name"])), {}) if runs else {}

    def fmt(value: Any, spec: str) -> str:
        return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"

    def ratio(r: dict[str, Any], key: str) -> str:
        a, b = r.get(key), base.get(key)
        return f"{a / b:.2f}x" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "-"

    lines = [
        "| variant | attention | trainable | s/step | vs first | tokens/s | peak alloc GB | vs first | floor GB | "
        "reference pass s | first loss | last loss | status |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        losses = r.get("losses") or [None]
        lines.append(
            f"| {r['name']} | {r.get('attn_implementation', '-')} | {fmt(r.get('trainable_params'), ',')} | "
            f"{fmt(r.get('step_s'), '.3f')} | {ratio(r, 'step_s')} | {fmt(r.get('tokens_per_sec'), '.0f')} | "
            f"{fmt(r.get('peak_gb'), '.2f')} | {ratio(r, 'peak_gb')} | {fmt(r.get('floor_gb'), '.2f')} | "
            f"{fmt(r.get('reference_pass_s'), '.1f')} | {fmt(losses[0], '.4f')} | {fmt(losses[-1], '.4f')} | "
            f"{r.get('status')} |"
        )
    return "\n".join(lines)
