"""Stop a run whose loss or gradients go non-finite, instead of training NaN to the end and calling it completed."""

from __future__ import annotations

import logging
import math

from simpo.runs.run_status import RunFailedError

log = logging.getLogger(__name__)

ADVICE = (
    "lower optimizer.lr, check loss.beta, and prefer fp32 weights with trainer.precision=bf16-mixed over "
    "model.dtype=float16"
)


class NonFiniteError(RunFailedError):
    """The loss, a gradient norm or the weights went NaN or infinite; the message names the metric and the step."""


class NonFiniteGuard:
    """Counts optimizer steps with a non-finite loss or gradient norm and decides whether to skip or stop.

    A bad step is skipped (its gradients are dropped, so the weights stay finite and the last checkpoint stays
    good) and counted; more than ``max_skipped_steps`` bad steps in a row stop the run with ``NonFiniteError``.

    Args:
        max_skipped_steps: consecutive bad steps tolerated (``max_nonfinite_steps``; 0: stop at the first).
    """

    def __init__(self, max_skipped_steps: int = 0) -> None:
        self.max_skipped_steps = max_skipped_steps
        self.consecutive = 0
        self.skipped = 0  # in the whole run (restored from checkpoints)
        self.skipped_here = 0  # by this process since it started (not restored)

    def good_step(self) -> None:
        """Record a finite step (resets the run of bad ones)."""
        self.consecutive = 0

    def bad_step(self, step: int, values: dict[str, float]) -> None:
        """Record a bad step ``step`` whose metrics were ``values`` (e.g. ``{"train/loss": nan, ...}``).

        Raises:
            NonFiniteError: when this makes more than ``max_skipped_steps`` bad steps in a row.
        """
        self.consecutive += 1
        self.skipped += 1
        self.skipped_here += 1
        bad = ", ".join(f"{name}={value}" for name, value in values.items() if not math.isfinite(value))
        shown = ", ".join(f"{name}={value:.4g}" for name, value in values.items())
        if self.consecutive > self.max_skipped_steps:
            raise NonFiniteError(
                f"non-finite at step {step}: {bad} ({shown}); {self.consecutive} bad step(s) in a row, "
                f"max_nonfinite_steps={self.max_skipped_steps}. The step was not applied: the weights and the last "
                f"checkpoint are finite. To fix: {ADVICE}"
            )
        log.warning("step %d skipped: %s (%d in a row, %d in all; max_nonfinite_steps=%d)",
                    step, bad, self.consecutive, self.skipped, self.max_skipped_steps)  # fmt: skip
