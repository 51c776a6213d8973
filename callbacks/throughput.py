"""Training throughput: tokens per second, peak memory and (on GPU) model FLOPs utilisation.

MFU is ``model FLOPs of the step / step time / the device's peak``, with the model FLOPs counted by one of two
stated conventions (``ModelFlops``), forward and backward (3 x the forward), activation recomputation not counted:

- ``train/mfu``, the FLOPs the objective needs: ``6 x N_body`` per token of every chosen and rejected sequence
  (``N_body``: every parameter but the input embedding and the output projection), ``6 x hidden x vocab`` per
  *labelled* token only (the head's logits are needed only where a response token is scored, which is all the
  chunked head computes), and attention's score and value products over the causal triangle of each sequence,
  ``12 x layers x heads x head_dim x s(s+1)/2`` for a sequence of s tokens. The same for every ``data.layout``
  (a shared-prompt layout, which computes the prompt once, therefore shows its saving as a higher MFU).
- ``train/mfu_palm``, PaLM's (Chowdhery et al. 2022, appendix B), for comparison with published numbers:
  ``6 x N`` per token (N: every parameter, a tied embedding counted once, an untied input embedding not at all)
  plus ``12 x layers x heads x head_dim x s`` per token of a sequence of s tokens (the full s x s square).

Sliding-window attention is counted as full causal attention.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch

# Dense bf16 peak FLOP/s per GPU (no sparsity), matched against ``torch.cuda.get_device_name()``; first match
# wins, so the more specific names come first.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A10G", 70e12),
    ("L40S", 362e12),
    ("L4", 121e12),
)


def peak_flops(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s of a GPU by name, ``None`` when the card is not in the table."""
    for key, flops in PEAK_BF16_FLOPS:
        if key in device_name:
            return flops
    return None


@dataclass(frozen=True)
class ModelFlops:
    """The parameter and attention counts behind the two MFU conventions of the module docstring.

    Attributes:
        body_params: parameters every token goes through: all but the input embedding and the output projection.
        head_params: the output projection, hidden x vocab (a tied embedding is counted here, once).
        palm_params: PaLM's N: every parameter but an untied input embedding (a lookup costs no FLOPs).
        attention: forward FLOPs of one attended (query, key) pair over all layers: 4 x layers x heads x head_dim.
    """

    body_params: int
    head_params: int
    palm_params: int
    attention: int

    @classmethod
    def of(cls, model: torch.nn.Module) -> ModelFlops | None:
        """The counts of a Hugging Face causal LM (or a peft model around one); ``None`` when it has no input and
        output embeddings or no attention shape in its config."""
        try:
            embedding = model.get_input_embeddings().weight
            head = model.get_output_embeddings().weight
        except (AttributeError, NotImplementedError):
            return None
        config = getattr(model, "config", None)
        config = config.get_text_config() if hasattr(config, "get_text_config") else config
        layers, heads = getattr(config, "num_hidden_layers", None), getattr(config, "num_attention_heads", None)
        if not layers or not heads:
            return None
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        total = sum(p.numel() for p in model.parameters())
        tied = head is embedding
        untied_embedding = 0 if tied else embedding.numel()
        return cls(
            body_params=total - head.numel() - untied_embedding,
            head_params=head.numel(),
            palm_params=total - untied_embedding,
            attention=4 * layers * heads * head_dim,
        )

    def needed(self, tokens: int, labelled: int, causal_pairs: int) -> float:
        """Model FLOPs (forward and backward) the objective needs for ``tokens`` sequence tokens, of which
        ``labelled`` are scored, with ``causal_pairs`` = sum over sequences of s(s+1)/2."""
        return 3.0 * (2 * self.body_params * tokens + 2 * self.head_params * labelled + self.attention * causal_pairs)

    def palm(self, tokens: int, squares: int) -> float:
        """PaLM's model FLOPs for ``tokens`` sequence tokens with ``squares`` = sum over sequences of s^2."""
        return 6.0 * self.palm_params * tokens + 3.0 * self.attention * squares


def batch_counts(batch: dict[str, Any]) -> dict[str, int]:
    """What the MFU conventions count in a ``PreferenceCollator`` batch: ``tokens`` (its chosen and rejected
    sequences' tokens), ``labelled`` (scored tokens, M), ``causal_pairs`` (sum of s(s+1)/2 over its sequences) and
    ``squares`` (sum of s^2); -1 for what a batch without ``sequence_lengths`` / ``target_ids`` cannot tell."""
    lengths = batch.get("sequence_lengths")
    targets = batch.get("target_ids")
    return {
        "tokens": int(batch["num_tokens"]),
        "labelled": targets.numel() if targets is not None else -1,  # a shape: no device synchronisation
        "causal_pairs": sum(s * (s + 1) // 2 for s in lengths) if lengths is not None else -1,
        "squares": sum(s * s for s in lengths) if lengths is not None else -1,
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


class ThroughputMonitor(L.Callback):
    """Log, once per optimizer step (after gradient accumulation):

    - ``train/tokens_per_sec``: non-padding tokens (``attention_mask`` ones of the (2B, T) batches) this process
      trained on during the step, over the step's wall time (from the first micro-batch's start to the end of
      the last one, including the optimizer step).
    - ``train/peak_memory_mb``: on GPU ``torch.cuda.max_memory_allocated``; on CPU the process's peak RSS.
    - ``train/mfu`` and ``train/mfu_palm``: the step's model FLOPs by the two conventions of the module docstring
      over its wall time and the peak FLOP/s (on a GPU in the table of dense bf16 peaks, or wherever
      ``peak_flops_per_sec`` is given); needs batches with ``sequence_lengths`` and ``target_ids``.

    Args:
        peak_flops_per_sec: override the device's peak FLOP/s for the MFU (``None``: look the card up).
    """

    metric_names = ("train/tokens_per_sec", "train/peak_memory_mb", "train/mfu", "train/mfu_palm")

    def __init__(self, peak_flops_per_sec: float | None = None) -> None:
        self.peak_flops_per_sec = peak_flops_per_sec
        self._start: float | None = None
        self._step_at_start = 0
        self._flops: ModelFlops | None = None
        self._counts = {"tokens": 0, "labelled": 0, "causal_pairs": 0, "squares": 0}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flops = ModelFlops.of(getattr(pl_module, "policy", pl_module))
        self._start = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._start is None:  # the first micro-batch of an optimizer step
            self._sync(pl_module)
            self._start, self._step_at_start = time.perf_counter(), trainer.global_step
            self._counts = dict.fromkeys(self._counts, 0)
        counts = self._counts
        for key, value in batch_counts(batch).items():
            counts[key] = -1 if value < 0 or counts[key] < 0 else counts[key] + value  # -1: unknown for this step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._start is None or trainer.global_step == self._step_at_start:
            return  # still accumulating gradients
        self._sync(pl_module)
        seconds = max(time.perf_counter() - self._start, 1e-9)
        self._start = None
        counts = self._counts
        metrics = {"train/tokens_per_sec": counts["tokens"] / seconds}
        device = pl_module.device
        peak = self.peak_flops_per_sec
        if device.type == "cuda":
            metrics["train/peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            peak = peak or peak_flops(torch.cuda.get_device_name(device))
        else:
            metrics["train/peak_memory_mb"] = peak_rss_mb()
        if peak and self._flops is not None and min(counts.values()) >= 0:
            needed = self._flops.needed(counts["tokens"], counts["labelled"], counts["causal_pairs"])
            metrics["train/mfu"] = needed / seconds / peak
            metrics["train/mfu_palm"] = self._flops.palm(counts["tokens"], counts["squares"]) / seconds / peak
        pl_module.log_dict(metrics, on_step=True, on_epoch=False)

    @staticmethod
    def _sync(pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
