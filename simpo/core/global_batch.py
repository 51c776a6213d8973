"""Gradient accumulation: derived from the global batch size, and where its windows end."""

from __future__ import annotations

from simpo.errors import UserError


def accumulation_steps(global_batch_size: int, batch_size: int, world_size: int) -> int:
    """Micro-batches per optimizer step so that one step sees ``global_batch_size`` pairs.

    Args:
        global_batch_size: pairs per optimizer step over all devices and nodes (``data.global_batch_size``).
        batch_size: pairs per device per micro-batch (``data.batch_size``).
        world_size: devices x nodes.

    Raises:
        ValueError: when ``global_batch_size`` is not a multiple of ``batch_size * world_size``.
    """
    per_micro_step = batch_size * world_size
    if global_batch_size <= 0 or global_batch_size % per_micro_step:
        raise UserError(
            f"data.global_batch_size={global_batch_size} is not a positive multiple of data.batch_size="
            f"{batch_size} x {world_size} devices (trainer.devices x trainer.num_nodes) = {per_micro_step}: "
            "change one of the three"
        )
    return global_batch_size // per_micro_step


def ends_accumulation_window(batch_idx: int, accumulate: int, num_batches: int | float) -> bool:
    """True when micro-batch ``batch_idx`` (0-based, within the epoch) is the last one before an optimizer step:
    ``accumulate`` micro-batches are done, or the epoch's last batch is."""
    done = batch_idx + 1
    return done % accumulate == 0 or done >= num_batches


def micro_batch_loss_weight(pairs: int, step_pairs: int, accumulate: int, world_size: int) -> float:
    """The factor on a micro-batch's mean loss that makes an optimizer step's gradient the mean over its pairs.

    Lightning divides every micro-batch loss by ``accumulate`` (even in an epoch's last, shorter window) and DDP / FSDP
    average gradients over ``world_size`` processes, so a micro-batch of ``pairs`` pairs whose mean loss is scaled by
    ``pairs * accumulate * world_size / step_pairs`` contributes ``sum of its pair losses / step_pairs``: summed over
    the step's micro-batches on every process, the mean over the ``step_pairs`` pairs of the step. With equal
    micro-batches of ``step_pairs / (accumulate * world_size)`` pairs the factor is 1.
    """
    return pairs * accumulate * world_size / step_pairs
