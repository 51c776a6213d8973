"""Train a causal LM with SimPO: ``python train.py [group=option ...] [key=value ...]``.

compose config -> seed -> tokenizer, policy, data -> Lightning fit (optionally resumed) -> Hugging Face
export (a callback) -> return the optimised metric (for Hydra sweepers). ``python train.py --help`` lists
every knob.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from callbacks.final_checkpoint import FinalCheckpoint
from callbacks.preemption import RunInterrupted
from callbacks.trainable_checkpoint import TrainableOnlyCheckpoint
from data.collate import choose_layout
from data.tokenizers import cache_root
from simpo.config.config_checks import check_train_config
from simpo.config.entrypoint import (
    PROJECT_ROOT,
    build,
    build_loss,
    register_resolvers,
    silence_library_noise,
    user_errors_as_messages,
)
from simpo.core.device import training_device
from simpo.core.global_batch import accumulation_steps
from simpo.errors import UserError
from simpo.io import write_text
from simpo.loading.policy_source import build_model_policy, load_model_tokenizer
from simpo.models.adapters import apply_adapters, check_adapter_settings, quantized_loading
from simpo.models.checkpointing import choose_checkpointing
from simpo.models.policy import check_context_length, warn_low_precision_weights
from simpo.models.pretrained_source import check_pretrained_source
from simpo.objectives.base import Objective
from simpo.reference.build import (
    build_reference,
    check_reference_config,
    digest_memo,
    install_reference_collator,
    policy_identity,
)
from simpo.runs.lock import RunDirInUseError
from simpo.runs.outputs import (
    check_output_directory,
    check_owned_directory,
    check_writable_directory,
    hold_directories,
    outside_run_dir,
)
from simpo.runs.resume import (
    CheckpointInfo,
    changed_settings,
    check_progress_left,
    check_resume_matches,
    check_same_data_order,
    check_strategy,
    read_checkpoint,
)
from simpo.runs.run_dir import RunPlan, apply, earlier_contents, plan_run_dir
from simpo.runs.run_status import NoTrainingError, write_status
from simpo.training.checkpoint_io import AtomicCheckpointIO
from simpo.training.loggers import drop_rows_from_step
from simpo.training.metric_names import (
    OptimizedMetricError,
    check_metric_has_data,
    check_optimized_metric,
    logged_metrics,
)
from simpo.training.module import SimPOModule
from simpo.training.nonfinite import ADVICE
from simpo.training.peer_loss import peer_lost

ROOT = PROJECT_ROOT
register_resolvers()
silence_library_noise()

log = logging.getLogger("train")
OUTPUT_KINDS = {"callbacks.hf_export.dirpath": "Hugging Face export",  # what each output outside the run holds
                "callbacks.model_checkpoint.dirpath": "checkpoints"}  # fmt: skip
SCHEDULE_KEYS = ("trainer.max_steps", "trainer.max_epochs", "trainer.limit_train_batches", "data.batch_size",
                 "data.global_batch_size", "trainer.accumulate_grad_batches", "optimizer.warmup_ratio",
                 "data.max_tokens_per_batch")  # fmt: skip


def build_module(cfg: DictConfig, tokenizer: Any, datamodule: Any, objective: Objective) -> SimPOModule:
    """The policy (loaded or random-initialised) wrapped with ``objective`` (built from ``cfg.loss``), its reference
    (when it needs one) and the optimiser settings.

    Under ``strategy=fsdp`` with ``fsdp.meta_init`` the policy's parameters stay on the meta device; global
    rank 0 builds the full weights (re-seeded, so a random init equals a 1-process run's) when sharding. The data
    module's splits must be loaded (a cached reference is keyed by them).
    """
    fsdp = OmegaConf.to_container(cfg.fsdp, resolve=True) if cfg.get("fsdp") else None
    model_section = OmegaConf.to_container(cfg.model, resolve=True)
    layout = cfg.data.get("layout", "padded")

    peft = OmegaConf.to_container(cfg.peft, resolve=True) if cfg.get("peft") else None
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    adapters = check_adapter_settings(peft, cfg.model.name_or_path, fsdp is not None, accelerator) if peft else None
    gradient_checkpointing = cfg.model.get("gradient_checkpointing", False)
    chunked = cfg.model.get("chunk_size", 1024) is not None  # the labelled-only head (the output projection's weight)

    def full_weights() -> dict[str, torch.Tensor]:
        policy = build_model_policy(model_section, tokenizer, seed=cfg.seed, layout=layout)
        return (apply_adapters(policy, adapters, chunked_head=chunked) if adapters else policy).state_dict()

    def reference_model(name_or_path: str | None) -> torch.nn.Module:
        """A reference: ``name_or_path``'s weights, or (None) the initial policy, rebuilt as at the start."""
        if name_or_path is None:
            return build_model_policy(model_section, tokenizer, seed=cfg.seed, layout=layout)
        return build_model_policy({**model_section, "name_or_path": name_or_path}, tokenizer, layout=layout)

    reference_cfg = OmegaConf.to_container(cfg.reference, resolve=True) if cfg.get("reference") else None
    mode = check_reference_config(reference_cfg, objective, adapters=bool(cfg.get("peft")))
    reference = None
    if mode is not None:
        if reference_cfg.get("name_or_path") is not None:
            check_pretrained_source(reference_cfg["name_or_path"], "reference.name_or_path")
        reference_data = install_reference_collator(datamodule, objective, cfg.data.max_length)
        data_parts = {role: split["cache"]["fingerprint"] for role, split in datamodule.report["splits"].items()}
        parts = {"data": data_parts, "dtype": cfg.model.dtype, "precision": str(cfg.trainer.precision),
                 "kl_pairs": objective.needs_kl_pairs, "max_length": cfg.data.max_length}  # fmt: skip
        source = policy_identity(model_section["name_or_path"], model_section["architecture"], cfg.seed, digest_memo())
        reference = build_reference(mode, reference_cfg, reference_model, parts, source, reference_data)
    meta_init = bool(fsdp and fsdp.get("meta_init", True))
    policy = build_model_policy(
        model_section,
        tokenizer,
        layout=layout,
        gradient_checkpointing=gradient_checkpointing,
        compile_layers=cfg.model.get("compile", False),
        empty_init=meta_init,
        load_kwargs=quantized_loading(adapters),
    )
    if adapters is not None:
        policy = apply_adapters(policy, adapters, gradient_checkpointing, chunked)
    return SimPOModule(
        policy,
        objective,
        chunk_size=cfg.model.get("chunk_size", 1024),
        **OmegaConf.to_container(cfg.optimizer),
        tokenizer=tokenizer,
        config=OmegaConf.to_container(cfg, resolve=True),
        fsdp=fsdp,
        full_weights=full_weights if meta_init else None,
        max_nonfinite_steps=cfg.get("max_nonfinite_steps", 0),
        head_backward=cfg.model.get("head_backward", "auto"),
        reference=reference,
    )


def settle_checkpointing(cfg: DictConfig, device: str) -> None:
    """Make ``model.gradient_checkpointing`` concrete (``auto``: ``choose_checkpointing`` for the training ``device``),
    so that ``config.yaml`` records what ran; the choice is logged."""
    requested = cfg.model.get("gradient_checkpointing", False)
    chosen, why = choose_checkpointing(requested, device)
    if chosen != requested:
        log.info("%s: %s", why, chosen)
        cfg.model.gradient_checkpointing = chosen


def settle_layout(cfg: DictConfig, resume: CheckpointInfo | None, device: str) -> str:
    """Make ``data.layout`` concrete (``auto``: ``data.collate.choose_layout`` for the training ``device``, the
    attention kernel and a resumed checkpoint's layout), so that ``config.yaml`` and the checkpoints record the layout
    used; returns why it is that one (logged and written to ``data_report.json``)."""
    resumed = None
    if resume is not None:
        resumed = ((resume.config or {}).get("data") or {}).get("layout", "padded")  # older checkpoints: padded
    layout, why = choose_layout(str(cfg.data.get("layout", "padded")), device, str(cfg.model.attn_implementation),
                                resumed)  # fmt: skip
    if layout != cfg.data.get("layout"):
        log.info("%s: %s", why, layout)
        cfg.data.layout = layout
    return why


def set_accumulation(trainer: L.Trainer, cfg: DictConfig) -> None:
    """Derive ``trainer.accumulate_grad_batches`` from ``data.global_batch_size`` when that is set."""
    global_batch = cfg.data.get("global_batch_size")
    if global_batch is None:
        return
    steps = accumulation_steps(global_batch, cfg.data.batch_size, trainer.world_size)
    if cfg.trainer.accumulate_grad_batches not in (1, steps):
        raise UserError(
            f"trainer.accumulate_grad_batches={cfg.trainer.accumulate_grad_batches} contradicts "
            f"data.global_batch_size={global_batch} (which needs {steps}): set only one of them"
        )
    trainer.accumulate_grad_batches = steps
    log.info("global batch %d = %d pairs x %d devices x %d accumulation steps",
             global_batch, cfg.data.batch_size, trainer.world_size, steps)  # fmt: skip


@dataclass
class PreparedRun:
    """Everything a training run needs, built and checked; nothing written yet.

    Attributes:
        cfg: the composed config.
        plan: how the run directory is used (fresh, resumed, cleared).
        resume: the checkpoint resumed from, or ``None``.
        changed: settings that differ from the resumed run's, ``{key: {"before": x, "after": y}}``.
        datamodule, module, trainer: the Lightning objects.
    """

    cfg: DictConfig
    plan: RunPlan
    resume: CheckpointInfo | None
    changed: dict[str, dict[str, Any]]
    datamodule: L.LightningDataModule
    module: SimPOModule
    trainer: L.Trainer


def prepare(cfg: DictConfig, sweep: bool = False) -> PreparedRun:
    """Check the config, the run directory and the checkpoint, then build data, policy and trainer.

    Nothing is written to the run directory here, so a command that fails at this point leaves an earlier run in
    the same directory untouched. In a sweep (``sweep``) the ``optimized_metric`` must be one the run will log.

    Raises:
        ConfigError, RunDirError, CheckpointError, FileNotFoundError, ValueError: with the key to change.
    """
    check_train_config(cfg)
    objective = build_loss(OmegaConf.to_container(cfg.loss, resolve=True))  # checks the loss keys
    run_dir = Path(cfg.run_dir)
    plan = plan_run_dir(run_dir, cfg.ckpt_path, bool(cfg.get("overwrite", False)), rank_zero_only.rank == 0,
                        checkpoint_dir(cfg))  # fmt: skip
    if rank_zero_only.rank == 0:  # written at the very end, or outside the run directory: checked before training
        for key, path in owned_outputs(cfg).items():
            check_owned_directory(path, key, cfg.run_dir, bool(cfg.get("overwrite", False)), OUTPUT_KINDS[key])
    check_writable_directory(cache_root(), "SIMPO_CACHE (the cache of tokenizers, tokenised data, reference tables)")
    callbacks = [build(c, key="callbacks") for c in cfg.callbacks.values() if c is not None] if cfg.callbacks else []
    if sweep:  # what the sweeper ranks must be logged: checked before any data or model is loaded
        check_optimized_metric(cfg.optimized_metric, logged_metrics(objective, callbacks))
    resume = read_checkpoint(plan.ckpt_path) if plan.ckpt_path else None
    device = training_device(str(cfg.trainer.get("accelerator", "auto")))
    layout_choice = settle_layout(cfg, resume, device)
    settle_checkpointing(cfg, device)
    changed: dict[str, dict[str, Any]] = {}
    if resume is not None:
        check_strategy(resume, sharded=bool(cfg.get("fsdp")))
        check_progress_left(resume, cfg.trainer.max_steps, cfg.trainer.max_epochs)
        if resume.config is not None:
            changed = changed_settings(resume.config, OmegaConf.to_container(cfg, resolve=True))
        if changed:
            lines = [f"  {key}: {value['before']!r} -> {value['after']!r}" for key, value in changed.items()]
            if any(key.startswith(SCHEDULE_KEYS) for key in changed):
                lines.append("  (the learning-rate schedule is recomputed over the new number of optimizer steps)")
            log.warning("resuming %s at step %d with changed settings (recorded in status.json):\n%s",
                        resume.path, resume.global_step, "\n".join(lines))  # fmt: skip
    if not cfg.get("peft"):  # adapters are kept in fp32 (peft) whatever the frozen base's dtype
        warn_low_precision_weights(cfg.model.dtype, cfg.optimizer.lr)
    L.seed_everything(cfg.seed, workers=True)
    tokenizer = load_model_tokenizer(cfg.model.name_or_path, cfg.model.get("tokenizer"))
    datamodule = build(cfg.data, key="data", tokenizer=tokenizer, layout_choice=layout_choice)
    datamodule.prepare_data()  # load, tokenise and check the data now: a bad file must not touch the run directory
    datamodule.load("fit")
    if sweep:
        check_metric_has_data(cfg.optimized_metric, datamodule.has_validation)
    module = build_module(cfg, tokenizer, datamodule, objective)
    check_context_length(cfg.data.max_length, module.policy.config)
    if resume is not None:  # before anything is written: the checkpoint's weights and data must be this run's
        shapes = {name: tuple(value.shape) for name, value in module.state_dict().items()}
        rows = getattr(datamodule, "train_rows_fingerprint", None)
        check_resume_matches(resume, OmegaConf.to_container(cfg, resolve=True), shapes, rows)
    callbacks.insert(0, FinalCheckpoint())  # the last step is on disk before the export (or anything) can fail
    if cfg.get("peft"):  # checkpoints hold the adapters alone; a resume keeps the rebuilt frozen base
        callbacks.append(TrainableOnlyCheckpoint())
        module.strict_loading = False
    loggers = [build(c, key="logger") for c in cfg.logger.values() if c is not None] if cfg.logger else False
    trainer: L.Trainer = build(cfg.trainer, key="trainer", callbacks=callbacks, logger=loggers,
                               plugins=[AtomicCheckpointIO()])  # fmt: skip
    set_accumulation(trainer, cfg)
    if resume is not None:
        check_same_data_order(resume, cfg, cfg.data.batch_size * trainer.world_size)
    if not datamodule.has_validation:
        trainer.limit_val_batches = 0  # no validation loop (Lightning would warn about an empty loader)
    return PreparedRun(cfg, plan, resume, changed, datamodule, module, trainer)


def execute(run: PreparedRun) -> dict[str, float]:
    """Write the run's records, train (validating first and last), and return the final metrics as floats.

    Raises:
        NoTrainingError: the fit ended without a single optimizer step.
        NonFiniteError: the loss, a gradient norm or the weights went NaN/inf (see ``max_nonfinite_steps``).
    """
    cfg, trainer, module, datamodule = run.cfg, run.trainer, run.module, run.datamodule
    run_dir = run.plan.run_dir
    start_step = run.resume.global_step if run.resume else 0
    if trainer.is_global_zero:
        apply(run.plan)
        if run.resume is None or not (run_dir / "config.yaml").is_file():
            write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        if run.resume is not None:  # rows logged after the checkpoint are logged again
            drop_rows_from_step(run_dir / "metrics.csv", start_step)
    details: dict[str, Any] = {"step": start_step}
    if module.reference is not None:  # which weights serve as the reference (their content digests)
        details["reference"] = getattr(module.reference, "identity", None)
    if run.resume is not None:
        details.update(resumed_from=str(run.resume.path), changed=run.changed)
    write_status(run_dir, "running", **details)

    if cfg.validate_before_training and run.resume is None and datamodule.has_validation:
        trainer.validate(module, datamodule=datamodule)
    trainer.fit(module, datamodule=datamodule, ckpt_path=run.plan.ckpt_path, weights_only=True)
    if trainer.global_step > start_step and trainer.global_step - start_step <= module.nonfinite.skipped_here:
        raise NoTrainingError(
            f"all {trainer.global_step - start_step} optimizer steps of this run were skipped as non-finite: no step "
            f"was applied (max_nonfinite_steps={cfg.max_nonfinite_steps}); {ADVICE}"
        )
    if trainer.global_step <= start_step:
        raise NoTrainingError(
            f"the run ended at step {trainer.global_step} without training: check trainer.max_steps "
            f"({cfg.trainer.max_steps}), trainer.max_epochs ({cfg.trainer.max_epochs}), "
            f"trainer.limit_train_batches ({cfg.trainer.limit_train_batches}) and the size of the training split"
        )
    if module.moving_steps_here == 0:
        stopped = f"trainer.max_time={cfg.trainer.max_time}" if cfg.trainer.get("max_time") else "its limits"
        raise NoTrainingError(
            f"the run stopped at step {trainer.global_step} ({stopped}) inside its learning-rate warmup, which starts "
            f"at 0 (optimizer.warmup_ratio={cfg.optimizer.warmup_ratio}): every step it took ran at learning rate 0, "
            "so the weights are the initial ones and nothing was exported. Train longer or lower "
            "optimizer.warmup_ratio; the checkpoint continues the warmup with ckpt_path=last"
        )
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    if datamodule.has_validation and module.last_validated_step != trainer.global_step:
        trainer.validate(module, datamodule=datamodule)  # the final weights, for the returned metric
        metrics.update({name: float(value) for name, value in trainer.callback_metrics.items()})
    metrics["train/skipped_steps"] = float(module.nonfinite.skipped)
    log.info("finished in %s at step %d: %s", run_dir, trainer.global_step,
             {k: float(f"{v:.4g}") for k, v in sorted(metrics.items())})  # fmt: skip
    return metrics


def owned_outputs(cfg: DictConfig) -> dict[str, str]:
    """The directories outside the run directory that the run writes, by config key; each checked to be a directory
    the run can create and write (``simpo.runs.outputs``), wherever it lies.

    Raises:
        RunDirError: a path that names no directory, a file, or one that cannot be written, naming its key.
    """
    outputs = {}
    export = (cfg.get("callbacks") or {}).get("hf_export")
    if export is not None:
        check_output_directory(export.dirpath, "callbacks.hf_export.dirpath")
        if outside_run_dir(export.dirpath, cfg.run_dir):
            outputs["callbacks.hf_export.dirpath"] = export.dirpath
    checkpoints = checkpoint_dir(cfg)
    if checkpoints is not None:
        check_output_directory(checkpoints, "callbacks.model_checkpoint.dirpath")
        if outside_run_dir(checkpoints, cfg.run_dir):
            outputs["callbacks.model_checkpoint.dirpath"] = str(checkpoints)
    return outputs


def checkpoint_dir(cfg: DictConfig) -> Path | None:
    """``callbacks.model_checkpoint.dirpath`` (where ``ckpt_path=last`` looks), or ``None``: ``<run_dir>/checkpoints``.

    Raises:
        UserError: ``callbacks.preemption.dirpath`` set to another directory (its ``last.ckpt`` would not be found).
    """
    callbacks = cfg.get("callbacks") or {}
    saver, preemption = callbacks.get("model_checkpoint"), callbacks.get("preemption")
    dirpath = Path(saver.dirpath).expanduser() if saver is not None and saver.get("dirpath") else None
    other = preemption.get("dirpath") if preemption is not None else None
    if other is not None and Path(other).expanduser() != (dirpath or Path(cfg.run_dir) / "checkpoints"):
        raise UserError(
            f"callbacks.preemption.dirpath={other} differs from the checkpoint directory "
            f"(callbacks.model_checkpoint.dirpath={dirpath}): ckpt_path=last would not find what it saves. Leave "
            "callbacks.preemption.dirpath=null (it follows callbacks.model_checkpoint.dirpath)"
        )
    return dirpath


def owner_lock(cfg: DictConfig) -> contextlib.AbstractContextManager:
    """The locks of the run directory and of the outputs outside it, taken by the process that writes them (global
    rank 0) before anything is written."""
    writer = rank_zero_only.rank == 0
    return hold_directories(cfg.run_dir, owned_outputs(cfg) if writer else {}, is_writer=writer)


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one training job described by ``cfg`` (holding its run directory); returns the final metrics as floats."""
    with owner_lock(cfg):
        return execute(prepare(cfg))


def run_and_record(cfg: DictConfig, multirun: bool = False) -> float | None:
    """Train and record the outcome in ``<run_dir>/status.json``; returns ``cfg.optimized_metric`` for sweepers.

    Each attempt is recorded: running, then completed, failed or interrupted. A command that fails its checks
    writes nothing into a directory that holds an earlier run. Inside a sweep (``multirun``) every run returns a
    number (NaN for a failed run, or one without the optimized metric) so the sweep goes on; a single run re-raises.
    A signal (SIGINT, SIGTERM, SIGUSR1) checkpoints at the next optimizer step and exits with 128 + its number.
    """
    run_dir = Path(cfg.run_dir)
    with contextlib.ExitStack() as owned:
        try:
            owned.enter_context(owner_lock(cfg))
            run = prepare(cfg, sweep=multirun)
        except Exception as error:
            if not multirun:
                raise
            # the sweep's own new directory: record the failure there (never in one another process owns)
            if not isinstance(error, RunDirInUseError) and not earlier_contents(run_dir):
                write_status(run_dir, "failed", error=f"{type(error).__name__}: {error}")
            if isinstance(error, OptimizedMetricError):
                raise  # every run of the sweep would fail the same way: stop it at its first
            log.exception("run failed its checks; the sweep continues")
            return float("nan")
        return _execute_and_record(run, multirun)


def _execute_and_record(run: PreparedRun, multirun: bool) -> float | None:
    """``execute`` and the status it ends in (see ``run_and_record``)."""
    cfg, run_dir = run.cfg, run.plan.run_dir
    try:
        metrics = execute(run)
    except RunInterrupted as stop:
        write_status(run_dir, "interrupted", error=str(stop), step=stop.step, checkpoint=stop.checkpoint)
        raise
    except (KeyboardInterrupt, SystemExit) as stop:
        step = run.trainer.global_step
        write_status(run_dir, "interrupted", error=f"{type(stop).__name__} before a checkpoint", step=step)
        if (run.plan.checkpoints / "last.ckpt").exists():
            log.warning("interrupted at step %d; resume from the last checkpoint with hydra.run.dir=%s ckpt_path=last",
                        step, run_dir)  # fmt: skip
        else:
            log.warning("interrupted at step %d before any checkpoint: run the same command again to start over", step)
        raise SystemExit(130) from None
    except Exception as caught:
        lost = peer_lost(caught, run.trainer, run.plan.checkpoints, run_dir)  # a dead process of the run, in one line
        error = lost or caught
        write_status(run_dir, "failed", error=f"{type(error).__name__}: {error}", step=run.trainer.global_step)
        if lost is not None and not multirun:
            raise lost from caught
        if not multirun:
            raise
        log.exception("run failed; the sweep continues")
        return float("nan")
    write_status(run_dir, "completed", metrics=metrics, step=run.trainer.global_step)
    value = metrics.get(cfg.optimized_metric)
    if value is None and multirun:
        log.error("optimized_metric=%s was never logged (no validation data? set data.val_size); returning NaN",
                  cfg.optimized_metric)  # fmt: skip
        return float("nan")
    return value


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point: ``run_and_record`` (in a ``-m`` sweep, failures are recorded and the sweep goes on); an
    error that names its cause ends the process with that one line and status 1."""
    with user_errors_as_messages(log):
        return run_and_record(cfg, multirun=HydraConfig.get().mode == RunMode.MULTIRUN)


if __name__ == "__main__":
    main()
