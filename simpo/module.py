"""The LightningModule: one forward over [chosen; rejected], the SimPO loss, metrics and the optimiser."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from simpo.logprobs import SequenceLogps, sequence_logps, sequence_logps_from_hidden
from simpo.loss import SimPOLoss
from simpo.optim import build_optimizer
from simpo.rng import rng_states, set_rng_states

# Causal LMs whose logits are exactly ``lm_head(model(...).last_hidden_state)`` (Gemma 2 adds a soft cap,
# applied by ``sequence_logps_from_hidden``). For these only the labelled positions are projected onto the
# vocabulary; any other architecture takes the plain full-logits path.
LABELLED_ONLY_MODEL_TYPES = frozenset({"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi3"})


class SimPOModule(L.LightningModule):
    """Train a Hugging Face causal LM with SimPO.

    Args:
        policy: the causal LM (dropout already disabled).
        loss: the SimPO objective.
        lr, weight_decay, betas, eps, warmup_ratio: AdamW and warmup-cosine schedule settings.
        tokenizer: kept beside the policy so callbacks can export both; not part of the checkpoint.
        config: the run's resolved configuration, stored in the checkpoint's hyper-parameters.
    """

    def __init__(
        self,
        policy: PreTrainedModel,
        loss: SimPOLoss,
        lr: float = 1e-6,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        warmup_ratio: float = 0.1,
        tokenizer: PreTrainedTokenizerBase | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["policy", "loss", "tokenizer"])
        self.policy = policy
        self.loss_fn = loss
        self.tokenizer = tokenizer

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[SequenceLogps, SequenceLogps]:
        """Per-sequence statistics of the chosen and rejected halves.

        Args:
            batch: ``input_ids``, ``attention_mask``, ``labels``, each (2B, T); rows [:B] chosen.

        Returns:
            (chosen, rejected) ``SequenceLogps`` with (B,) fields.
        """
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if self.policy.config.model_type in LABELLED_ONLY_MODEL_TYPES:
            hidden = self.policy.model(**inputs).last_hidden_state  # (2B, T, H)
            softcap = getattr(self.policy.config, "final_logit_softcapping", None)
            stats = sequence_logps_from_hidden(hidden, batch["labels"], self.policy.lm_head, softcap)
        else:
            stats = sequence_logps(self.policy(**inputs).logits, batch["labels"])  # (2B,) fields
        return stats.split(batch["input_ids"].shape[0] // 2)

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        chosen, rejected = self(batch)
        out = self.loss_fn(chosen.logp_mean, rejected.logp_mean, chosen.logp_sum, chosen.token_count)
        n_pairs = chosen.logp_sum.shape[0]
        metrics = {
            "loss": out.loss.detach(),
            "rewards/chosen": out.chosen_rewards.mean(),
            "rewards/rejected": out.rejected_rewards.mean(),
            "rewards/margins": (out.chosen_rewards - out.rejected_rewards).mean(),
            "rewards/accuracies": (out.chosen_rewards > out.rejected_rewards).float().mean(),
            "logps/chosen": chosen.logp_mean.detach().mean(),
            "logps/rejected": rejected.logp_mean.detach().mean(),
            "logits/chosen": chosen.logit_sum.sum() / chosen.token_count.sum(),
            "logits/rejected": rejected.logit_sum.sum() / rejected.token_count.sum(),
        }
        if out.sft_loss is not None:
            metrics["sft_loss"] = out.sft_loss.detach()
        training = stage == "train"
        self.log_dict(
            {f"{stage}/{name}": value for name, value in metrics.items()},
            on_step=training,
            on_epoch=not training,
            batch_size=n_pairs,
            sync_dist=not training,
            prog_bar=False,
        )
        return out.loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, "train")
        self.log("train/lr", self.lr_schedulers().get_last_lr()[0], on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Log the total gradient norm (before clipping) of the accumulated gradients."""
        grads = [p.grad for p in self.policy.parameters() if p.grad is not None]
        if grads:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
            self.log("train/grad_norm", norm, on_step=True, on_epoch=False)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the RNG states (Python, NumPy, torch CPU and CUDA) for exact resume."""
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_states" in checkpoint:
            set_rng_states(checkpoint["rng_states"])

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
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
