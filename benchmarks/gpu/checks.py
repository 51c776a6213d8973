"""The GPU checks, one function each, registered in ``CHECKS`` in the order they run (most valuable first).

``run_checks.py`` runs every check in its own process (``python benchmarks/gpu/checks.py NAME --result FILE ...``)
with its own timeout. A check writes its result JSON as it goes (``Context.update``), so a check stopped by its
timeout still reports what it measured. Without CUDA a check rehearses its code on the CPU at a small size and
reports ``skipped: no CUDA`` (or ``error`` when the rehearsal itself broke).

To add a check (later issues): write ``def my_check(ctx: Context) -> None`` below, decorate it with
``@check("name", "title", timeout_s)`` at the place in the order where it should run, fill ``ctx.update(...)`` /
``ctx.table(...)`` and end with ``ctx.finish(status, message)`` (or let ``ctx.judge`` decide). Nothing else
changes: the runner, the report and the JSON pick it up.

Top-level imports are the standard library only: the runner imports this file for the list of checks.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT, ROOT / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

# Thresholds of check a (relative to max(1, |reference|) for losses, to |reference| for gradient vectors).
LOSS_TOL_FP32 = 1e-4  # fp32 on the device against float64 on the CPU (the issue's bound)
LOSS_TOL_BF16 = 1e-2  # bf16-mixed against float64 (the issue's bound)
GRAD_TOL_FP32 = 1e-3  # fp32 gradients against float64 (ours: float32 lands far under it)
CHUNKED_TOL = 1e-5  # chunked head against full logits, both fp32 on the device: loss
CHUNKED_GRAD_TOL = 1e-4  # and gradients
# Check b: the MFU goal and under what a profile goes into the report, both judged on ``train/mfu`` (the model FLOPs
# the objective needs, callbacks/throughput.py); PaLM's convention is reported beside it.
MFU_GOAL, MFU_PROFILE_BELOW = 0.45, 0.35


# ----------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Check:
    name: str
    title: str
    timeout_s: int  # the most this check may take on the GPU machine (the runner's budget can cut it shorter)
    expected_s: int  # what it is expected to take there (the plan's sum stays inside the default budget)
    func: Callable[[Context], None]
    needs_cuda: bool = True  # without CUDA: rehearse on the CPU and report "skipped: no CUDA"


CHECKS: list[Check] = []
# The one device call: ``run.sh`` under ``timeout_s=590``; everything (install, preflight, checks, report) within
# BUDGET_S counted from run.sh's start. SETUP_S: installing the carried wheels and the preflight's imports.
BUDGET_S, SETUP_S = 560, 20


def check(name: str, title: str, timeout_s: int, expected_s: int, needs_cuda: bool = True) -> Callable:
    """Register ``func`` as the next check in the order they run (most valuable per second first)."""

    def register(func: Callable[[Context], None]) -> Callable[[Context], None]:
        CHECKS.append(Check(name, title, timeout_s, expected_s, func, needs_cuda))
        return func

    return register


class Context:
    """What a check gets: where to write, how small to be, how much time is left.

    Attributes:
        name: the check's name.
        work: a scratch directory shared by all checks of one run (later checks may reuse earlier outputs).
        quick: the test-suite setting: nothing is trained through ``train.py`` (its overrides are only composed).
        deadline: ``time.time()`` by which the check must have finished.
        cuda: whether a CUDA device is visible.
    """

    def __init__(
        self, name: str, result_path: Path, work: Path, quick: bool, deadline: float, needs_cuda: bool = True
    ) -> None:
        import torch

        self.name, self.result_path, self.work, self.quick, self.deadline = name, result_path, work, quick, deadline
        self.needs_cuda = needs_cuda
        self.cuda = torch.cuda.is_available()
        self.device = "cuda" if self.cuda else "cpu"
        self.result: dict[str, Any] = {"status": "running", "message": "", "results": {}, "tables": {}}
        self.flush()

    def remaining(self) -> float:
        return self.deadline - time.time()

    @staticmethod
    def log(*parts: Any) -> None:
        log(*parts)

    def flush(self) -> None:
        tmp = self.result_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.result, indent=1, default=str))
        tmp.replace(self.result_path)

    def update(self, **results: Any) -> None:
        self.result["results"].update(results)
        self.flush()

    def table(self, key: str, markdown: str) -> None:
        self.result["tables"][key] = markdown
        self.flush()

    def finish(self, status: str, message: str) -> None:
        """``status``: pass | fail (ran, missed its criterion) | error. Without CUDA a check that rehearsed cleanly
        is reported as ``skipped: no CUDA``, its numbers kept as the rehearsal's."""
        if self.needs_cuda and not self.cuda and status in ("pass", "fail"):
            self.result["results"]["rehearsal_ok"] = True
            self.result["results"]["rehearsal_criteria_met"] = status == "pass"
            status, message = "skipped: no CUDA", f"rehearsed on CPU: {message}"
        self.result["status"], self.result["message"] = status, message
        self.flush()

    def judge(self, failures: list[str], summary: str, errors: list[str] = ()) -> None:
        """``error`` when something broke (``errors``: a crash, a run that did not finish), else ``fail`` when a
        criterion was missed (``failures``), else ``pass`` with ``summary``."""
        if errors:
            self.finish("error", "; ".join([*errors, *failures]))
        else:
            self.finish("fail" if failures else "pass", "; ".join(failures) if failures else summary)


def log(*parts: Any) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *parts, flush=True)


# ----------------------------------------------------------------------------------------------- env


@check("env", "Environment: versions, device, imports, tokenizer", 45, 25, needs_cuda=False)
def environment(ctx: Context) -> None:
    """Versions of everything the checks use, the device and its measured bf16 matmul rate, the project's imports
    (``train.py`` needs hydra, omegaconf and datasets) and the bundled Llama 3 tokenizer (built once, cached)."""
    import preflight
    import torch

    versions = preflight.versions()
    versions["torch.cuda"] = torch.version.cuda
    device: dict[str, Any] = {"cuda": ctx.cuda, "cpu_count": os.cpu_count()}
    if ctx.cuda:
        from callbacks.throughput import peak_flops

        props = torch.cuda.get_device_properties(0)
        name = torch.cuda.get_device_name(0)
        device.update(
            name=name,
            capability=f"{props.major}.{props.minor}",
            memory_gb=props.total_memory / 2**30,
            multiprocessors=props.multi_processor_count,
            peak_bf16_tflops=(peak_flops(name) or 0) / 1e12,
            matmul_tf32=torch.backends.cuda.matmul.allow_tf32,
            float32_matmul_precision=torch.get_float32_matmul_precision(),
            bf16_matmul_tflops=_matmul_tflops(),
        )
    ctx.update(versions=versions, device=device)
    imports: dict[str, str] = {}
    for module in (
        "train",
        "data.datamodule",
        "simpo.training.module",
        "simpo.training.fsdp",
        "callbacks.throughput",
        "benchmarks.gpu.step_recorder",
        "benchmarks.gpu.step_bench",
        "peft",
    ):
        try:
            __import__(module)
            imports[module] = "ok"
        except Exception as error:  # report every failing import, not only the first
            imports[module] = f"{type(error).__name__}: {error}"
    ctx.update(imports=imports)
    start = time.perf_counter()
    from data.tokenizers import load_tokenizer

    tokenizer = load_tokenizer("llama3")
    ctx.update(tokenizer={"vocab": len(tokenizer), "seconds": time.perf_counter() - start})
    bad = [f"import {m}: {e}" for m, e in imports.items() if e != "ok"]
    where = f"{device.get('name', 'CPU')}, torch {versions['torch']}, transformers {versions['transformers']}"
    ctx.judge(bad, where)


def _matmul_tflops(n: int = 8192, repeats: int = 10) -> float:
    """bf16 n x n x n matrix products on random data, timed with CUDA events after 3 warm-ups (the card's ceiling)."""
    import torch

    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * n**3 * repeats / (start.elapsed_time(end) / 1e3) / 1e12


# ----------------------------------------------------------------------------------------------- a. exactness


@check("exactness", "a. Exactness: step-0 loss on the device vs a float64 CPU reference", 75, 45)
def exactness(ctx: Context) -> None:
    """The first training step of the bundled tiny Llama (real Llama 3 vocabulary) on the first validation batch of
    ``data/tiny_prefs``, through ``SimPOModule`` in a Lightning ``Trainer``: its loss and gradients on the device in
    fp32 and bf16-mixed, with the chunked head and with full logits, single-device and FSDP2 on one device, each
    against the same step in float64 on the CPU (``precision="64-true"``)."""
    import copy

    import lightning as L
    import torch
    from step_bench import TINY_LLAMA, grad_error
    from torch.utils.data import DataLoader

    from data.datamodule import PreferenceDataModule
    from data.tokenizers import load_tokenizer
    from simpo.models.policy import build_policy
    from simpo.objectives import SimPO
    from simpo.training.fsdp import AtomicModelParallelStrategy
    from simpo.training.module import SimPOModule

    started = time.perf_counter()
    tokenizer = load_tokenizer("llama3")
    pairs = 8 if ctx.cuda else 2  # bf16 matrix products are slow on a CPU: a smaller rehearsal
    data = PreferenceDataModule(
        tokenizer, str(ROOT / "data" / "tiny_prefs"), max_length=128, max_prompt_length=64, batch_size=pairs, seed=0
    )
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    log(f"tokenizer and data in {time.perf_counter() - started:.1f} s")
    L.seed_everything(0, verbose=False)
    policy = build_policy(tokenizer, architecture=dict(TINY_LLAMA), dtype="float32", attn_implementation="sdpa")
    initial = {k: v.detach().clone() for k, v in policy.state_dict().items()}
    chunk = 256 if ctx.cuda else 64  # several chunks per batch (the CPU rehearsal's batch is smaller)

    class OneBatch(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 1

        def __getitem__(self, index: int) -> dict[str, Any]:
            return batch

    class Capture(L.Callback):
        """Loss and gradients of the first optimizer step (before AdamW changes the weights)."""

        def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: Any, optimizer: Any) -> None:
            from torch.distributed.tensor import DTensor

            self.grads = {}
            for name, p in pl_module.policy.named_parameters():
                if p.grad is not None:
                    g = p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad
                    self.grads[name] = g.detach().to("cpu", torch.float64)

        def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, b: Any, i: int) -> None:
            self.loss = float(outputs["loss"] if isinstance(outputs, dict) else outputs)

    def step0(device: str, precision: str, chunk_size: int | None, fsdp: bool = False) -> tuple[float, dict]:
        model = copy.deepcopy(policy)
        model.load_state_dict(initial)
        module = SimPOModule(
            model, SimPO(beta=2.0, gamma_beta_ratio=0.5), chunk_size=chunk_size, lr=1e-6, warmup_ratio=0.0
        )
        capture = Capture()
        trainer = L.Trainer(
            accelerator="gpu" if device == "cuda" else "cpu",
            devices=1,
            precision=precision,
            strategy=AtomicModelParallelStrategy() if fsdp else "auto",
            max_steps=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=[capture],
        )
        trainer.fit(module, train_dataloaders=DataLoader(OneBatch(), batch_size=None))
        return capture.loss, capture.grads

    started = time.perf_counter()
    ref_loss, ref_grads = step0("cpu", "64-true", chunk)
    log(f"float64 reference: loss {ref_loss:.8f} in {time.perf_counter() - started:.1f} s")
    ctx.update(
        reference={
            "device": "cpu",
            "precision": "64-true",
            "loss": ref_loss,
            "chunk_size": chunk,
            "batch": {k: list(v.shape) for k, v in batch.items() if hasattr(v, "shape")},
        }
    )
    dev = ctx.device
    variants = [  # name, precision, chunk_size, fsdp, loss tolerance vs float64, gradient tolerance vs float64
        ("fp32 chunked", "32-true", chunk, False, LOSS_TOL_FP32, GRAD_TOL_FP32),
        ("fp32 full logits", "32-true", None, False, LOSS_TOL_FP32, GRAD_TOL_FP32),
        ("bf16-mixed chunked", "bf16-mixed", chunk, False, LOSS_TOL_BF16, None),
        ("bf16-mixed full logits", "bf16-mixed", None, False, LOSS_TOL_BF16, None),
        ("FSDP2 fp32 chunked", "32-true", chunk, True, LOSS_TOL_FP32, GRAD_TOL_FP32),
        ("FSDP2 bf16-mixed chunked", "bf16-mixed", chunk, True, LOSS_TOL_BF16, None),
    ]
    if ctx.quick and not ctx.cuda:  # the test suite: bf16 matrix products are slow on a CPU
        variants = [v for v in variants if v[1] == "32-true"]
    rows, failures, errors, runs = [], [], [], {}
    for name, precision, chunk_size, fsdp, tol, grad_tol in variants:
        started = time.perf_counter()
        try:
            loss, grads = step0(dev, precision, chunk_size, fsdp)
            log(f"{name}: loss {loss:.8f} in {time.perf_counter() - started:.1f} s")
        except Exception as error:
            traceback.print_exc()
            errors.append(f"{name}: {type(error).__name__}: {error}")
            rows.append(f"| {name} | {dev} | error | | | | {type(error).__name__} |")
            continue
        runs[name] = (loss, grads)
        loss_err = abs(loss - ref_loss) / max(1.0, abs(ref_loss))
        g_err = grad_error(grads, ref_grads)
        ok = loss_err <= tol and (grad_tol is None or g_err <= grad_tol)
        if not ok:
            failures.append(
                f"{name}: loss error {loss_err:.2e} (<= {tol:g}), gradient error {g_err:.2e}"
                + (f" (<= {grad_tol:g})" if grad_tol else "")
            )
        ctx.update(
            **{
                name: {
                    "loss": loss,
                    "loss_error": loss_err,
                    "grad_error": g_err,
                    "tolerance": tol,
                    "grad_tolerance": grad_tol,
                    "ok": ok,
                }
            }
        )
        rows.append(
            f"| {name} | {dev} | {loss:.8f} | {loss_err:.2e} | <= {tol:g} | {g_err:.2e}"
            f"{f' (<= {grad_tol:g})' if grad_tol else ''} | {'ok' if ok else 'FAIL'} |"
        )
    for precision, tol in (("fp32", CHUNKED_TOL), ("bf16-mixed", LOSS_TOL_BF16)):
        a, b = runs.get(f"{precision} chunked"), runs.get(f"{precision} full logits")
        if a and b:
            loss_err = abs(a[0] - b[0]) / max(1.0, abs(b[0]))
            g_err = grad_error(a[1], b[1])
            grad_tol = CHUNKED_GRAD_TOL if precision == "fp32" else None
            ok = loss_err <= tol and (grad_tol is None or g_err <= grad_tol)
            if not ok:
                failures.append(f"{precision} chunked vs full logits: loss {loss_err:.2e}, gradients {g_err:.2e}")
            ctx.update(**{f"{precision} chunked vs full": {"loss_error": loss_err, "grad_error": g_err, "ok": ok}})
            rows.append(
                f"| {precision}: chunked vs full logits | {dev} | | {loss_err:.2e} | <= {tol:g} | {g_err:.2e}"
                f"{f' (<= {grad_tol:g})' if grad_tol else ''} | {'ok' if ok else 'FAIL'} |"
            )
    header = [
        f"Reference: float64 on CPU, loss {ref_loss:.8f} (tiny Llama, hidden 64, 2 layers, vocabulary "
        f"{len(tokenizer)}; first validation batch of data/tiny_prefs, {pairs} pairs, chunk_size {chunk}). Errors: "
        "|loss - ref| / max(1, |ref|) and ||grad - ref|| / ||ref|| over all parameters.",
        "",
        "| run | device | step-0 loss | loss error | bound | gradient error | |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    ctx.table("exactness", "\n".join(header + rows))
    ctx.judge(
        failures, f"all {len(rows)} comparisons within bounds (fp32 {LOSS_TOL_FP32:g}, bf16 {LOSS_TOL_BF16:g})", errors
    )


# ----------------------------------------------------------------------------------------------- FlexAttention
# Seconds on a micro Llama before the 1B runs, so that a kernel bug is told apart from a slow compile or a timeout.

from flex_check import flex_attention  # noqa: E402

check("flex_attention", "FlexAttention: forward and backward of shared_prompt_packed on a micro Llama vs SDPA's mask",
      90, 50)(flex_attention)  # fmt: skip


# ----------------------------------------------------------------------------------------------- b, c: train.py runs


@dataclass(frozen=True)
class TrainSetting:
    """The size of the ``train.py`` runs of checks b and c."""

    model_size: str  # a key of simpo_vs_trl.MODEL_SIZES
    seq: int
    pairs: int
    steps: int
    warmup: int  # first steps left out of the medians
    profile_steps: int  # the last steps, profiled, also left out
    precision: str


def train_setting(ctx: Context) -> TrainSetting:
    if ctx.cuda:  # the issue's setting: Llama 3.2 1B shape, 2 pairs x 2048 tokens, bf16-mixed
        return TrainSetting("1b", 2048, 2, 12, 3, 2, "bf16-mixed")
    # A CPU rehearsal of the same command, smaller and in fp32 (bf16 matrix products crawl on a CPU).
    return TrainSetting("tiny", 128, 2, 4, 1, 1, "32-true")


def training_data(ctx: Context, setting: TrainSetting) -> Path:
    """Synthetic preference rows (``simpo_vs_trl.synthesise_rows``: prompts about a quarter, responses about three
    quarters of ``seq`` tokens) for every step of the runs, written once per length and shared with the comparisons."""
    from step_bench import synthetic_data

    return synthetic_data(ctx.work, setting.seq, setting.pairs * (setting.steps + 2))


def train_overrides(
    setting: TrainSetting,
    run_dir: Path,
    data_dir: Path,
    device: str,
    checkpointing: bool,
    chunk_size: int | None,
    attention: str = "sdpa",
) -> list[str]:
    """The ``python train.py`` overrides of one throughput run: FSDP2 on one device, the given size, no validation,
    no checkpoints or export, every step logged and recorded by ``StepRecorder`` (the last steps profiled)."""
    from simpo_vs_trl import MODEL_SIZES

    architecture = ",".join(f"{k}:{v}" for k, v in MODEL_SIZES[setting.model_size].items())
    recorder = "+callbacks.step_recorder"
    return [
        f"hydra.run.dir={run_dir}",
        "overwrite=true",
        "strategy=fsdp",
        "trainer.devices=1",
        f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
        f"trainer.precision={setting.precision}",
        "model.dtype=float32",
        f"model.attn_implementation={attention}",
        f"model.gradient_checkpointing={str(checkpointing).lower()}",
        f"model.chunk_size={'null' if chunk_size is None else chunk_size}",
        "~model.architecture",
        f"+model.architecture={{{architecture}}}",
        f"data.dataset={data_dir}",
        "data.test_split=null",
        f"data.batch_size={setting.pairs}",
        f"data.max_length={setting.seq}",
        f"data.max_prompt_length={setting.seq // 4}",
        f"trainer.max_steps={setting.steps}",
        "trainer.log_every_n_steps=1",
        "validate_before_training=false",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "callbacks.hf_export=null",
        "callbacks.model_checkpoint=null",
        "optimizer.lr=1e-5",
        "optimizer.warmup_ratio=0",
        f"{recorder}._target_=benchmarks.gpu.step_recorder.StepRecorder",
        f"{recorder}.path={run_dir}/steps.jsonl",
        f"{recorder}.profile_from={setting.steps - setting.profile_steps}",
        f"{recorder}.profile_steps={setting.profile_steps}",
        f"{recorder}.profile_path={run_dir}/profile.md",
    ]


def compose_only(overrides: list[str], validate: bool) -> dict[str, Any]:
    """The test-suite (``--quick``) stand-in for a ``train.py`` run: compose the overrides against ``conf/`` as
    Hydra would and, with ``validate``, run the config checks ``train.py`` runs first and build the step recorder
    (which imports Lightning: slow on a busy CPU, so done once per quick run), without training."""
    from hydra import compose, initialize_config_dir

    run_dir = next(o.split("=", 1)[1] for o in overrides if o.startswith("hydra.run.dir="))
    rest = [o for o in overrides if not o.startswith("hydra.")]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"run_dir={run_dir}", *rest])
    if validate:
        from hydra.utils import instantiate

        from simpo.config.config_checks import check_train_config
        from simpo.config.entrypoint import register_resolvers

        register_resolvers()
        check_train_config(cfg)
        instantiate(cfg.callbacks.step_recorder)
    return {
        "composed": True,
        "validated": validate,
        "callbacks": sorted(cfg.callbacks),
        "strategy": cfg.trainer.strategy._target_,
    }


def run_train(
    ctx: Context, name: str, setting: TrainSetting, checkpointing: bool, chunk_size: int | None, timeout_s: float
) -> dict[str, Any]:
    """One ``python train.py`` run in its own process (its output goes to this check's log); returns its summary
    (also written to ``<work>/runs/<name>/summary.json`` for later checks)."""
    run_dir = ctx.work / "runs" / name
    data_dir = training_data(ctx, setting) if not ctx.quick else ctx.work / "data-unused"
    overrides = train_overrides(setting, run_dir, data_dir, ctx.device, checkpointing, chunk_size)
    summary: dict[str, Any] = {
        "name": name,
        "checkpointing": checkpointing,
        "chunk_size": chunk_size,
        "model": setting.model_size,
        "seq": setting.seq,
        "pairs": setting.pairs,
        "precision": setting.precision,
    }
    if ctx.quick:
        summary.update(compose_only(overrides, validate=ctx.name == "throughput"), status="composed")
        return summary
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    command = [sys.executable, str(ROOT / "train.py"), *overrides]
    log(f"{name}: python train.py " + " ".join(overrides))
    start = time.time()
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    # In this check's process group, so that the runner's kill at the check's timeout ends train.py too.
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    try:
        returncode = process.wait(timeout=max(timeout_s, 1))
        status = "ok" if returncode == 0 else f"error: train.py exited with {returncode}"
    except subprocess.TimeoutExpired:
        process.kill()  # SIGKILL: SIGTERM would make the preemption callback write a checkpoint first
        process.wait()
        status = f"timeout after {timeout_s:.0f} s"
    summary.update(status=status, wall_s=time.time() - start, **summarise_steps(run_dir, setting, start))
    if status.startswith("timeout") and summary.get("trained_to_end"):
        summary["status"] = f"ok (every step done; killed at exit after {timeout_s:.0f} s)"
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    log(f"{name}: {summary['status']}, {summary.get('tokens_per_sec') or 0:.0f} tokens/s, MFU {summary.get('mfu')}")
    return summary


def summarise_steps(run_dir: Path, setting: TrainSetting, launched: float) -> dict[str, Any]:
    """Medians over the measured steps (after ``warmup``, before the profiled ones) of the step recorder's lines;
    ``startup_s``: from the process's launch to the start of its first step (imports, data, weights, sharding)."""
    path = run_dir / "steps.jsonl"
    if not path.is_file():
        return {"steps_recorded": 0}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    start = next((r for r in records if r["event"] == "train_start"), {})
    steps = [r for r in records if r["event"] == "step"]
    trained_to_end = any(r["event"] == "train_end" for r in records)
    measured = [r for r in steps if setting.warmup <= r["step"] < setting.steps - setting.profile_steps]
    out: dict[str, Any] = {
        "trained_to_end": trained_to_end,
        "steps_recorded": len(steps),
        "steps_measured": len(measured),
        "n_params": start.get("n_params"),
        "device_name": start.get("device_name"),
        "attn_implementation": start.get("attn_implementation"),
        "startup_s": steps[0]["time"] - steps[0]["step_s"] - launched if steps else None,
    }
    if not measured:
        return out

    def median(key: str) -> float | None:
        values = [r[key] for r in measured if r.get(key) is not None]
        return statistics.median(values) if values else None

    tokens_per_sec = median("train/tokens_per_sec")
    out.update(
        tokens_per_sec=tokens_per_sec,
        step_s=median("step_s"),
        mfu=median("train/mfu"),  # the model FLOPs the objective needs (callbacks/throughput.py)
        mfu_palm=median("train/mfu_palm"),  # PaLM's convention, for published numbers
        peak_memory_gb=max((r.get("train/peak_memory_mb") or 0) for r in steps) / 1024,
        peak_reserved_gb=max((r.get("max_memory_reserved_mb") or 0) for r in steps) / 1024 or None,
        loss_first=steps[0].get("train/loss"),
        loss_last=steps[-1].get("train/loss"),
    )
    if start.get("device_name"):
        from callbacks.throughput import peak_flops

        out["peak_tflops"] = (peak_flops(start["device_name"]) or 0) / 1e12
    profile = run_dir / "profile.md"
    if profile.is_file():
        out["profile"] = profile.read_text()
    return out


def run_table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| run | activation ckpt | head | tokens/s | s/step | MFU (needed) | MFU (PaLM) | "
        "peak alloc GB | peak reserved GB | startup s | status |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]

    def fmt(value: Any, spec: str) -> str:
        return format(value, spec) if isinstance(value, (int, float)) else "-"

    for r in runs:
        head = "full logits" if r.get("chunk_size") is None else f"chunked {r['chunk_size']}"
        lines.append(
            f"| {r['name']} | {'on' if r.get('checkpointing') else 'off'} | {head} | "
            f"{fmt(r.get('tokens_per_sec'), '.0f')} | {fmt(r.get('step_s'), '.3f')} | {fmt(r.get('mfu'), '.1%')} | "
            f"{fmt(r.get('mfu_palm'), '.1%')} | {fmt(r.get('peak_memory_gb'), '.2f')} | "
            f"{fmt(r.get('peak_reserved_gb'), '.2f')} | {fmt(r.get('startup_s'), '.0f')} | {r.get('status')} |"
        )
    return "\n".join(lines)


def run_budget(ctx: Context, runs_left: int, cap: float) -> float:
    """Seconds for the next ``train.py`` run: its cap, or an even share of what is left, whichever is less."""
    return min(cap, (ctx.remaining() - 5) / max(runs_left, 1)) if runs_left > 1 else min(cap, ctx.remaining() - 5)


THROUGHPUT_RUNS = (("sdpa-ckpt", True), ("sdpa", False))  # name, activation checkpointing; most valuable first
RUN_CAP_S = 85  # one 1B train.py run: start-up (imports, data, rank-0 init of 1.2B weights) plus 12 steps
RUN_EXPECTED_S = 60


@check(
    "throughput",
    "b. Throughput: 1B Llama, bf16-mixed, FSDP2 on one GPU, 2 pairs x 2048 tokens, SDPA",
    2 * RUN_CAP_S,
    2 * RUN_EXPECTED_S,
)
def throughput(ctx: Context) -> None:
    """Tokens/s, MFU and peak memory of ``python train.py strategy=fsdp`` with activation checkpointing on and off."""
    setting = train_setting(ctx)
    ctx.update(setting=setting.__dict__)
    runs = []
    for index, (name, checkpointing) in enumerate(THROUGHPUT_RUNS):
        budget = run_budget(ctx, len(THROUGHPUT_RUNS) - index, RUN_CAP_S)
        runs.append(run_train(ctx, name, setting, checkpointing, 1024, budget))
        ctx.update(runs=runs)
        ctx.table("runs", run_table(runs))
    if ctx.quick:
        ctx.finish("pass", f"composed {len(runs)} train.py runs (quick: nothing trained)")
        return
    errors = [
        f"{r['name']}: {r['status']}" for r in runs if not r["status"].startswith("ok") or not r.get("steps_measured")
    ]
    failures: list[str] = []
    profiles = []
    for r in runs:
        mfu = r.get("mfu")
        if r.get("profile") and (mfu is None or mfu < MFU_PROFILE_BELOW):
            profiles.append(
                f"**{r['name']}** (MFU {f'{mfu:.1%}' if mfu is not None else 'unknown'}):\n\n{r['profile']}"
            )
        if ctx.cuda and mfu is not None and mfu < MFU_GOAL:
            failures.append(f"{r['name']}: MFU {mfu:.1%} < goal {MFU_GOAL:.0%}")
    if profiles:
        ctx.table("profiles", "\n\n".join(profiles))
    best = max((r.get("mfu") or 0 for r in runs), default=0)
    listed = ", ".join(f"{r['name']} {r.get('mfu') or 0:.1%} (PaLM's {r.get('mfu_palm') or 0:.1%})" for r in runs)
    ctx.judge(
        failures,
        f"MFU {listed} (goal {MFU_GOAL:.0%}); best {best:.1%}"
        if ctx.cuda
        else "train.py runs completed on CPU (no MFU without a GPU)",
        errors,
    )


# ----------------------------------------------------------------------------------------------- c to g
# The in-process comparisons (comparisons.py), after check b in the order they run: by value per second, so that a
# short budget drops the last ones (the pytest re-run of QLoRA first, then LoRA vs full, QLoRA, the reference, ...).

from comparisons import chunked_head, dpo_reference, layouts, lora_vs_full, qlora  # noqa: E402

check("layouts", "e. Batch layouts: 1B Llama, bf16-mixed, 2 pairs x 2048 tokens, padded vs packed layouts", 100, 80)(
    layouts
)
check("chunked_head", "c. The head: chunked (recompute / store) vs full logits, 1B, 2048 tokens", 60, 40)(chunked_head)
check("dpo_reference", "f. Reference cost: SimPO vs DPO with reference=cached / model, 1B, 2048 tokens", 60, 45)(
    dpo_reference
)
check("qlora", "d. QLoRA: a tiny pretrained Llama in 4-bit NF4 trains its adapters (bitsandbytes, bf16)", 45, 30)(qlora)
check("lora_vs_full", "g. LoRA vs full fine-tuning: 1B, bf16, 2048 tokens", 50, 35)(lora_vs_full)


@check("qlora_test", "d2. The GPU-marked QLoRA test: pytest -m gpu tests/test_lora_gpu.py (train.py, peft=qlora)",
       75, 60)  # fmt: skip
def qlora_test(ctx: Context) -> None:
    """``python -m pytest -m gpu tests/test_lora_gpu.py``: ``train.py peft=qlora`` on a tiny pretrained Llama (the
    production path: Hydra config, 4-bit base, adapter-only checkpoint, merged and adapter-only exports). It skips
    itself without CUDA or bitsandbytes; this check reports which."""
    report = ctx.work / "qlora-test.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-rs",
               f"--junitxml={report}", "tests/test_lora_gpu.py"]  # fmt: skip
    log("running " + " ".join(command))
    try:
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=max(ctx.remaining() - 5, 1))
    except subprocess.TimeoutExpired as error:
        out = error.stdout if isinstance(error.stdout, str) else (error.stdout or b"").decode(errors="replace")
        print(out[-6000:], flush=True)
        ctx.finish("error", f"pytest did not finish in {error.timeout:.0f} s")
        return
    print(proc.stdout[-6000:], proc.stderr[-2000:], flush=True)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else f"no output (exit {proc.returncode})"
    skip_reasons = [line for line in lines if line.startswith("SKIPPED")]
    ctx.update(returncode=proc.returncode, pytest=summary, skipped=skip_reasons)
    if proc.returncode != 0:
        ctx.finish("fail", f"pytest exited with {proc.returncode}: {summary}")
    elif " passed" in summary and " skipped" not in summary:
        ctx.finish("pass", summary)
    elif any("bitsandbytes" in line for line in skip_reasons) and ctx.cuda:
        ctx.finish("skipped: bitsandbytes not available", summary)
    elif not ctx.cuda and " skipped" in summary:
        ctx.finish("pass", f"pytest skipped it as it should without CUDA: {summary}")
    else:
        ctx.finish("error", f"unexpected pytest result: {summary}")


# ----------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one GPU check (normally called by run_checks.py).")
    parser.add_argument("name", choices=[c.name for c in CHECKS])
    parser.add_argument("--result", type=Path, required=True, help="the result JSON to write")
    parser.add_argument("--work", type=Path, required=True, help="scratch directory shared by the checks")
    parser.add_argument("--deadline", type=float, required=True, help="time.time() by which to be done")
    parser.add_argument("--quick", action="store_true", help="test-suite size: compose train.py runs, train none")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    entry = next(c for c in CHECKS if c.name == args.name)
    ctx = Context(args.name, args.result, args.work, args.quick, args.deadline, entry.needs_cuda)
    try:
        entry.func(ctx)
    except Exception as error:
        traceback.print_exc()
        ctx.finish("error", f"{type(error).__name__}: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
