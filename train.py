"""Train a causal LM with SimPO: ``python train.py [group=option ...] [key=value ...]``.

compose config -> seed -> tokenizer, policy, data -> Lightning fit (optionally resumed) -> Hugging Face
export (a callback) -> return the optimised metric (for Hydra sweepers). ``python train.py --help`` lists
every knob.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from data.tokenizers import load_tokenizer
from simpo.checkpoint_io import AtomicCheckpointIO, checkpoint_global_step
from simpo.entrypoint import PROJECT_ROOT, build_loss, register_resolvers
from simpo.global_batch import accumulation_steps
from simpo.loggers import drop_rows_from_step
from simpo.module import SimPOModule
from simpo.policy import build_policy
from simpo.run_status import write_status

ROOT = PROJECT_ROOT
register_resolvers()

log = logging.getLogger("train")


def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path) -> str | None:
    """``last`` -> ``<run_dir>/checkpoints/last.ckpt``; ``auto`` -> the same if it exists, else a fresh start
    (for jobs that a scheduler requeues with the same command); a path must exist; ``None`` starts fresh."""
    if ckpt_path is None:
        return None
    if ckpt_path == "auto":
        last = run_dir / "checkpoints" / "last.ckpt"
        return str(last) if last.exists() else None
    path = run_dir / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    if not path.exists():  # a file, or a directory for sharded (FSDP) checkpoints
        hint = " (set hydra.run.dir to the run directory to resume)" if ckpt_path == "last" else ""
        raise FileNotFoundError(f"ckpt_path={ckpt_path}: no checkpoint at {path}{hint}")
    return str(path)


def build_module(cfg: DictConfig, tokenizer: Any) -> SimPOModule:
    """The policy (loaded or random-initialised) wrapped with the SimPO loss and optimiser settings.

    Under ``strategy=fsdp`` with ``fsdp.meta_init`` the policy's parameters stay on the meta device; global
    rank 0 builds the full weights (re-seeded, so a random init equals a 1-process run's) when sharding.
    """
    fsdp = OmegaConf.to_container(cfg.fsdp, resolve=True) if cfg.get("fsdp") else None
    options = {
        "name_or_path": cfg.model.name_or_path,
        "architecture": OmegaConf.to_container(cfg.model.architecture) if cfg.model.architecture else None,
        "dtype": cfg.model.dtype,
        "attn_implementation": cfg.model.attn_implementation,
    }

    def full_weights() -> dict[str, torch.Tensor]:
        L.seed_everything(cfg.seed, verbose=False)
        return build_policy(tokenizer, **options).state_dict()

    meta_init = bool(fsdp and fsdp.get("meta_init", True))
    policy = build_policy(
        tokenizer,
        **options,
        gradient_checkpointing=cfg.model.get("gradient_checkpointing", False),
        compile_layers=cfg.model.get("compile", False),
        empty_init=meta_init,
    )
    return SimPOModule(
        policy,
        build_loss(OmegaConf.to_container(cfg.loss, resolve=True)),
        chunk_size=cfg.model.get("chunk_size", 1024),
        **OmegaConf.to_container(cfg.optimizer),
        tokenizer=tokenizer,
        config=OmegaConf.to_container(cfg, resolve=True),
        fsdp=fsdp,
        full_weights=full_weights if meta_init else None,
    )


def set_accumulation(trainer: L.Trainer, cfg: DictConfig) -> None:
    """Derive ``trainer.accumulate_grad_batches`` from ``data.global_batch_size`` when that is set."""
    global_batch = cfg.data.get("global_batch_size")
    if global_batch is None:
        return
    steps = accumulation_steps(global_batch, cfg.data.batch_size, trainer.world_size)
    if cfg.trainer.accumulate_grad_batches not in (1, steps):
        raise ValueError(
            f"trainer.accumulate_grad_batches={cfg.trainer.accumulate_grad_batches} contradicts "
            f"data.global_batch_size={global_batch} (which needs {steps}): set only one of them"
        )
    trainer.accumulate_grad_batches = steps
    log.info("global batch %d = %d pairs x %d devices x %d accumulation steps",
             global_batch, cfg.data.batch_size, trainer.world_size, steps)  # fmt: skip


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one training job described by ``cfg``; returns the final callback metrics as floats."""
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if rank_zero_only.rank == 0:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)

    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.name_or_path)
    datamodule = instantiate(cfg.data, tokenizer=tokenizer)
    module = build_module(cfg, tokenizer)
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None] if cfg.callbacks else []
    loggers = [instantiate(c) for c in cfg.logger.values() if c is not None] if cfg.logger else False
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, plugins=[AtomicCheckpointIO()])
    set_accumulation(trainer, cfg)

    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, run_dir)
    if ckpt_path is not None and trainer.is_global_zero:  # rows logged after the checkpoint are logged again
        drop_rows_from_step(run_dir / "metrics.csv", checkpoint_global_step(ckpt_path))
    has_validation = cfg.data.test_split is not None or cfg.data.get("val_size") is not None
    if cfg.validate_before_training and ckpt_path is None and has_validation:
        trainer.validate(module, datamodule=datamodule)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    log.info("finished in %s: %s", run_dir, {k: round(v, 4) for k, v in sorted(metrics.items())})
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns ``cfg.optimized_metric`` for sweepers.

    Every run records its outcome in ``<run_dir>/status.json``. Inside a sweep (``-m``) a failing run is
    recorded as failed and returns NaN, so the sweep goes on; a single run re-raises.
    """
    run_dir = Path(cfg.run_dir)
    try:
        metrics = train(cfg)
    except Exception as error:
        write_status(run_dir, "failed", error=f"{type(error).__name__}: {error}")
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise
        log.exception("run failed; the sweep continues")
        return float("nan")
    write_status(run_dir, "completed", metrics=metrics)
    return metrics.get(cfg.optimized_metric)


if __name__ == "__main__":
    main()
