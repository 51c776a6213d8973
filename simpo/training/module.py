"""The LightningModule: the policy scored by ``simpo.scoring.Scorer`` (one forward over [chosen; rejected] in any batch
layout), a preference objective (SimPO by default; ``simpo/objectives/``) with its reference log-probs when it needs
them (placed beside the policy, sharded like it under FSDP), metrics, non-finite skips, RNG state and the optimiser."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.fsdp import register_fsdp_forward_method
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from simpo.core.finite import describe_nonfinite, nonfinite_tensors
from simpo.core.global_batch import ends_accumulation_window
from simpo.core.labelled_head import METHOD_NAME
from simpo.core.logprobs import SequenceLogps
from simpo.core.rng import rng_states, set_rng_states
from simpo.errors import UserError
from simpo.objectives import Objective, PairLogps
from simpo.reference.provider import ReferencePlacement, ReferenceProvider
from simpo.runs.resume import continue_stopped_epoch
from simpo.scoring import Scorer
from simpo.training.fsdp import materialize, shard_policy
from simpo.training.metric_names import step_metrics
from simpo.training.nonfinite import NonFiniteError, NonFiniteGuard
from simpo.training.optim import build_optimizer, squared_norm


class SimPOModule(L.LightningModule):
    """Train a Hugging Face causal LM with a preference objective (SimPO by default).

    Args:
        policy: the causal LM (dropout already disabled).
        loss: the objective (``simpo.objectives``); it declares whether it needs reference log-probs.
        reference: where the reference log-probs come from (``simpo.reference.provider``); required when the
            objective needs them, ignored otherwise.
        chunk_size: labelled tokens projected onto the vocabulary at a time (``model.chunk_size``), so the
            largest vocabulary-sized buffer is (chunk_size, V); ``None`` builds the full (2B, T, V) logits.
        lr, weight_decay, betas, eps, warmup_ratio: AdamW and warmup-cosine schedule settings.
        implementation: how AdamW runs (``optimizer.implementation``: fused | foreach | for_loop,
            ``simpo.training.optim``).
        tokenizer: kept beside the policy so callbacks can export both; not part of the checkpoint.
        config: the run's resolved configuration, stored in the checkpoint's hyper-parameters.
        fsdp: FSDP2 options (``cpu_offload``, ``reshard_after_forward``) used when the trainer's strategy is
            a ``ModelParallelStrategy``.
        full_weights: for a policy built with its parameters on the meta device: returns the full weights
            (called on global rank 0 only, then broadcast into the shards).
        max_nonfinite_steps: optimizer steps in a row whose loss or gradient norm is NaN/inf that are skipped
            (gradients dropped, counted in ``train/skipped_steps``) before the run stops with ``NonFiniteError``.
        head_backward: how the labelled-only head forms its gradient (``model.head_backward``, see
            ``simpo.core.labelled_head``).
    """

    def __init__(
        self,
        policy: PreTrainedModel,
        loss: Objective,
        chunk_size: int | None = 1024,
        lr: float = 1e-6,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        warmup_ratio: float = 0.1,
        implementation: str = "fused",
        tokenizer: PreTrainedTokenizerBase | None = None,
        config: dict[str, Any] | None = None,
        fsdp: dict[str, Any] | None = None,
        full_weights: Callable[[], dict[str, torch.Tensor]] | None = None,
        max_nonfinite_steps: int = 0,
        head_backward: str = "auto",
        reference: ReferenceProvider | None = None,
    ) -> None:
        super().__init__()
        if loss.needs_reference and reference is None:
            raise UserError(f"loss={type(loss).__name__} needs a reference model: set reference=cached or model")
        self.scorer = Scorer(chunk_size, head_backward)
        self.save_hyperparameters(ignore=["policy", "loss", "tokenizer", "full_weights", "reference"])
        self.policy = policy
        self.loss_fn = loss
        self.reference = reference if loss.needs_reference else None
        self.tokenizer = tokenizer
        self.full_weights = full_weights
        self._sharded = False
        self._window: dict[str, torch.Tensor] = {}  # train metrics x pairs over the current accumulation window
        self._window_pairs = 0
        self.nonfinite = NonFiniteGuard(max_nonfinite_steps)
        self._loss_finite: dict[str, torch.Tensor] = {}  # per stage: every loss since the last check was finite
        self._window_loss: torch.Tensor | None = None
        self.last_validated_step: int | None = None  # global step of the latest validation pass
        self.moving_steps_here = 0  # optimizer steps this process applied at a non-zero learning rate
        self.scorer.attach(policy)

    def configure_model(self) -> None:
        """Under ``ModelParallelStrategy``: shard the policy with FSDP2 and, if it was built on the meta
        device, allocate the shards and fill them from rank 0's full weights. Otherwise nothing."""
        strategy = self.trainer.strategy
        if self._sharded or not isinstance(strategy, ModelParallelStrategy):
            return
        options = self.hparams.get("fsdp") or {}
        shard_policy(
            self.policy,
            strategy.device_mesh["data_parallel"],
            str(self.trainer.precision),
            cpu_offload=options.get("cpu_offload", False),
            reshard_after_forward=options.get("reshard_after_forward", True),
        )
        if hasattr(self.policy, METHOD_NAME):
            register_fsdp_forward_method(self.policy, METHOD_NAME)
        if any(p.is_meta for p in self.policy.parameters()):
            if self.full_weights is None:
                raise ValueError("the policy was built on the meta device but no full weights were given")
            materialize(self.policy, strategy.root_device, self.full_weights if self.trainer.is_global_zero else None)
        self._sharded = True

    def _place_reference(self, model: PreTrainedModel) -> None:
        """Put a frozen reference where the policy is: sharded like it under FSDP, else on its device."""
        if self._sharded:
            options = self.hparams.get("fsdp") or {}
            strategy = self.trainer.strategy
            shard_policy(model, strategy.device_mesh["data_parallel"], str(self.trainer.precision),
                         cpu_offload=options.get("cpu_offload", False))  # fmt: skip
            if hasattr(model, METHOD_NAME):
                register_fsdp_forward_method(model, METHOD_NAME)
        else:
            model.to(next(self.policy.parameters()).device)

    def _prepare_reference(self) -> None:
        if self.reference is None:
            return
        trainer = self.trainer
        # a resumed fit has loaded trained weights before this hook runs (its step counter is restored only later,
        # so the checkpoint path is what tells)
        initial = trainer.global_step == 0 and trainer.ckpt_path is None
        placement = ReferencePlacement(
            self.scorer, self.policy, self._place_reference, self.device, initial, trainer.global_rank,
            trainer.world_size, trainer.precision_plugin.forward_context, trainer.is_global_zero,
        )  # fmt: skip
        self.reference.prepare(placement)

    def on_fit_start(self) -> None:
        self._prepare_reference()

    def on_validation_start(self) -> None:
        self._prepare_reference()

    def on_train_start(self) -> None:
        """Set each parameter group's learning rate from the schedule at the current step. On a fresh run this is what
        the scheduler set; on a resume the optimizer state brings back the learning rate of the checkpoint's own
        schedule, which a changed ``trainer.max_steps`` (or warmup) replaces: the first resumed step must already
        run at the new schedule's rate, not at the old one's (0 at the end of a finished cosine)."""
        scheduler = self.lr_schedulers()
        if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            return
        rates = [base * rule(scheduler.last_epoch) for base, rule in zip(scheduler.base_lrs, scheduler.lr_lambdas,
                                                                         strict=True)]  # fmt: skip
        for group, rate in zip(scheduler.optimizer.param_groups, rates, strict=True):
            group["lr"] = rate
        scheduler._last_lr = rates

    def forward(self, batch: dict[str, Any]) -> tuple[SequenceLogps, SequenceLogps]:
        """Per-sequence statistics of the policy's chosen and rejected responses: ``SequenceLogps`` with (n,) fields
        each (n = ``num_pairs``, KTO's mismatched pseudo-pairs included)."""
        return self.scorer.sequence_stats(self.policy, batch).split(int(batch["num_pairs"]))

    def pair_logps(self, batch: dict[str, Any]) -> tuple[PairLogps, SequenceLogps, SequenceLogps]:
        """``Scorer.pair_logps`` of the policy, with the reference's sums when the objective needs them."""
        reference = self.reference.sums if self.reference is not None else None
        return self.scorer.pair_logps(self.policy, batch, reference)

    def _step(self, batch: dict[str, torch.Tensor], stage: str, batch_idx: int = 0) -> torch.Tensor:
        pair, chosen, rejected = self.pair_logps(batch)
        out = self.loss_fn(pair)
        finite = torch.isfinite(out.loss.detach())
        self._loss_finite[stage] = finite & self._loss_finite[stage] if stage in self._loss_finite else finite
        n_pairs = chosen.logp_sum.shape[0]
        metrics = step_metrics(out, chosen, rejected)
        if stage == "train":
            self._log_train_window(metrics, n_pairs, batch_idx)
            if "loss_weight" in batch:  # token-budget batches: the step's loss is the mean over the step's pairs
                return out.loss * batch["loss_weight"]
        else:
            self.log_dict({f"val/{name}": value for name, value in metrics.items()}, on_step=False, on_epoch=True,
                          batch_size=n_pairs, sync_dist=True)  # fmt: skip
        return out.loss

    def _log_train_window(self, metrics: dict[str, torch.Tensor], n_pairs: int, batch_idx: int) -> None:
        """Log ``train/*`` once per optimizer step: the pair-weighted mean over its accumulated micro-batches and over
        processes (which may hold different numbers of pairs under ``data.max_tokens_per_batch``): one all-reduce of
        the pair-weighted sums and the pair count."""
        for name, value in metrics.items():
            self._window[name] = self._window.get(name, 0.0) + value * n_pairs
        self._window_pairs += n_pairs
        trainer = self.trainer
        if not ends_accumulation_window(batch_idx, trainer.accumulate_grad_batches, trainer.num_training_batches):
            return  # more micro-batches before the optimizer step
        names = list(self._window)
        sums = torch.stack([torch.as_tensor(self._window[n], dtype=torch.float32, device=self.device) for n in names])
        pairs = torch.tensor([float(self._window_pairs)], device=self.device)
        totals = self.trainer.strategy.reduce(torch.cat([sums, pairs]), reduce_op="sum")
        means = {f"train/{name}": totals[i] / totals[-1] for i, name in enumerate(names)}
        self._window_loss = means["train/loss"]
        self.log_dict(means, on_step=True, on_epoch=False)
        self._window, self._window_pairs = {}, 0

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, "train", batch_idx)
        self.log("train/lr", self.lr_schedulers().get_last_lr()[0], on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val", batch_idx)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Log the total gradient norm (before clipping) of the accumulated gradients (over all shards), and skip
        the step (drop its gradients) when that norm or a micro-batch loss is not finite (``NonFiniteGuard``)."""
        grads = [p.grad for p in self.policy.parameters() if p.grad is not None]
        if not grads:
            return
        total = squared_norm(grads)
        if self._sharded:  # each process holds a disjoint shard of every gradient
            torch.distributed.all_reduce(total)
        grad_norm = total.sqrt()
        self.log("train/grad_norm", grad_norm, on_step=True, on_epoch=False)
        loss_finite = self._loss_finite.pop("train", torch.ones((), dtype=torch.bool, device=grad_norm.device))
        local_bad = bool(~(torch.isfinite(grad_norm) & loss_finite))  # one host sync per optimizer step
        if not self.trainer.strategy.reduce_boolean_decision(local_bad, all=False):
            self.nonfinite.good_step()
            if any(group["lr"] > 0 for group in optimizer.param_groups):  # at learning rate 0 AdamW changes nothing
                self.moving_steps_here += 1
            return
        loss = self._window_loss if self._window_loss is not None else torch.tensor(float("nan"))
        values = {"train/loss": float(loss), "train/grad_norm": float(grad_norm)}
        scaler_overflow = str(self.trainer.precision) == "16-mixed" and bool(torch.isfinite(loss))
        if not scaler_overflow:  # with 16-mixed, the gradient scaler skips overflowing steps itself
            for param in self.policy.parameters():
                param.grad = None
        self.nonfinite.bad_step(self.trainer.global_step, values)
        self.log("train/skipped_steps", float(self.nonfinite.skipped), on_step=True, on_epoch=False)

    def on_validation_epoch_end(self) -> None:
        """Stop the run when a validation loss was not finite (on any process)."""
        self.last_validated_step = self.trainer.global_step
        finite = self._loss_finite.pop("val", None)
        local_bad = finite is not None and not bool(finite)
        if self.trainer.strategy.reduce_boolean_decision(local_bad, all=False):
            raise NonFiniteError(
                f"val/loss is not finite at step {self.trainer.global_step}: the policy's rewards overflow the loss "
                "(check loss.beta, loss.gamma_beta_ratio and the learning rate)"
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the RNG states (Python, NumPy, torch CPU and CUDA) for exact resume; refuse to save weights that
        hold NaN/inf, so that the last checkpoint on disk is always a usable one."""
        bad = nonfinite_tensors(self.policy.named_parameters())
        if self.trainer.strategy.reduce_boolean_decision(bool(bad), all=False):
            raise NonFiniteError(
                f"not saving a checkpoint at step {self.trainer.global_step}: the weights hold NaN/inf "
                f"({describe_nonfinite(bad) if bad else 'on another process'}); the previous checkpoint is kept"
            )
        checkpoint["rng_states"] = rng_states()
        checkpoint["nonfinite_skipped_steps"] = self.nonfinite.skipped

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_states" in checkpoint:
            set_rng_states(checkpoint["rng_states"])
        self.nonfinite.skipped = int(checkpoint.get("nonfinite_skipped_steps", 0))
        continue_stopped_epoch(checkpoint)  # before Lightning restores its loops from the same dict

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer, scheduler = build_optimizer(
            self.policy,
            hp.lr,
            hp.weight_decay,
            hp.betas,
            hp.eps,
            hp.warmup_ratio,
            total_steps=int(self.trainer.estimated_stepping_batches),
            implementation=hp.implementation,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
