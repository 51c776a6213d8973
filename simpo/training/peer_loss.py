"""A process of a multi-process run that dies (``kill -9``, the out-of-memory killer, a node lost) leaves the others
with a communication error deep in a collective (gloo's "Connection reset by peer", NCCL's aborted communicator).
``peer_lost`` turns that into one line that says which process ended, how, and how to resume."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import lightning as L
import torch.distributed as dist

from simpo.errors import UserError

# What a collective reports when the process at the other end is gone.
LOST_PEER_MESSAGES = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "Connection refused",
                      "NCCL communicator was aborted", "ProcessGroupNCCL's watchdog", "Socket Timeout")  # fmt: skip


class PeerLostError(UserError):
    """Another process of this run ended while this one waited for it in a collective operation."""


def is_lost_peer(error: BaseException) -> bool:
    """Whether ``error`` is what a collective raises when the process at the other end is gone."""
    text = str(error)
    return isinstance(error, dist.DistError) or (
        isinstance(error, RuntimeError) and any(marker in text for marker in LOST_PEER_MESSAGES)
    )


def peer_lost(error: BaseException, trainer: L.Trainer, checkpoints: Path, run_dir: Path) -> PeerLostError | None:
    """The one-line error for ``error`` when it is a lost peer of a multi-process ``trainer``, else ``None``.

    The launching process (global rank 0 of the node) knows its local children: those that ended are named with their
    rank and exit status, and the others, which would wait for the dead one forever, are stopped.
    """
    if trainer.world_size <= 1 or not is_lost_peer(error):
        return None
    procs = list(getattr(trainer.strategy.launcher, "procs", None) or [])
    deadline = time.monotonic() + 5.0  # a process that raised is still exiting
    while procs and all(proc.poll() is None for proc in procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    first_rank = trainer.node_rank * trainer.num_devices
    ended = [f"rank {first_rank + i} (process {proc.pid}) {_how(proc.returncode)}"
             for i, proc in enumerate(procs, start=1) if proc.poll() is not None]  # fmt: skip
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)  # it waits in a collective for a process that is gone
    who = ", ".join(ended) if ended else "another process of this run ended (its own log says why)"
    resume = (f"resume it with hydra.run.dir={run_dir} ckpt_path=last (the checkpoint in {checkpoints})"
              if (checkpoints / "last.ckpt").exists() else "it saved no checkpoint yet: start it again")  # fmt: skip
    return PeerLostError(
        f"{who} at step {trainer.global_step}, while rank {trainer.global_rank} waited for it in a collective "
        f"({type(error).__name__}: {str(error).splitlines()[0][:120]}...); the run stopped: {resume}"
    )


def _how(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with status {returncode}"
