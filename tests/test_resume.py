"""Exact resume: same data order mid-epoch, optimizer, schedule, accumulation phase, RNG and logger; SIGTERM /
SIGUSR1 checkpoints; atomic checkpoint files."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from data.resumable_loader import ResumableDataLoader
from simpo.training.checkpoint_io import AtomicCheckpointIO
from tests.conftest import TINY_OVERRIDES, compose_train
from train import ROOT, train

# 6 optimizer steps of 2 micro-batches x 4 pairs, no validation, every step logged.
EXACT = [*TINY_OVERRIDES, "trainer.accumulate_grad_batches=2", "data.test_split=null", "trainer.max_steps=6",
         "callbacks.model_checkpoint.every_n_train_steps=100"]  # fmt: skip


class SendSignalAt(L.Callback):
    """Test helper: the process sends itself ``signum`` after micro-batch ``batch_idx``."""

    def __init__(self, batch_idx: int, signum: str = "SIGTERM") -> None:
        self.batch_idx, self.signum = batch_idx, getattr(signal, signum)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.batch_idx:
            os.kill(os.getpid(), self.signum)


def losses(run_dir: Path) -> dict[int, float]:
    with (run_dir / "metrics.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("train/loss")]
    steps = [int(r["step"]) for r in rows]
    assert len(steps) == len(set(steps)), f"a step was logged twice: {steps}"
    return {int(r["step"]): float(r["train/loss"]) for r in rows}


@pytest.mark.parametrize("signum", ["SIGTERM", pytest.param("SIGUSR1", marks=pytest.mark.slow)])
def test_signal_then_resume_equals_a_straight_run(tmp_path, signum):
    straight = tmp_path / "straight"
    train(compose_train(straight, EXACT))

    stopped = tmp_path / "stopped"
    # The signal arrives after micro-batch 6, the first half of optimizer step 4: the run finishes that
    # step, checkpoints at step 4 and exits.
    signal_cb = [f"+callbacks.signal._target_={__name__}.SendSignalAt", "+callbacks.signal.batch_idx=6",
                 f"+callbacks.signal.signum={signum}"]  # fmt: skip
    with pytest.raises(SystemExit):
        train(compose_train(stopped, [*EXACT, *signal_cb]))
    ckpt = torch.load(stopped / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4
    assert not (stopped / "hf").exists()  # no export of an unfinished run
    assert signal.getsignal(signal.SIGTERM) is not None  # handlers restored

    train(compose_train(stopped, [*EXACT, "ckpt_path=last"]))
    expected, got = losses(straight), losses(stopped)
    assert sorted(got) == [0, 1, 2, 3, 4, 5]
    for step in range(6):
        assert got[step] == pytest.approx(expected[step], abs=1e-6, rel=0), step
    final = torch.load(stopped / "checkpoints" / "last.ckpt", weights_only=True)
    reference = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    for name, tensor in reference["state_dict"].items():
        assert torch.allclose(final["state_dict"][name], tensor, atol=1e-6), name


def test_loader_resumes_mid_epoch_in_the_same_order():
    data = list(range(10))
    loader = ResumableDataLoader(data, batch_size=3, seed=7)
    first_epoch = [b.tolist() for b in loader]
    assert sorted(i for batch in first_epoch for i in batch) == data and len(loader) == 4
    iterator = iter(loader)
    seen = [next(iterator).tolist(), next(iterator).tolist()]  # epoch 1, two batches
    state = loader.state_dict()
    assert state == {"epoch": 1, "batches_done": 2, "seed": 7, "global_batch_rows": 3}
    rest = [b.tolist() for b in iterator]
    resumed = ResumableDataLoader(data, batch_size=3, seed=7)
    resumed.load_state_dict(state)
    assert [b.tolist() for b in resumed] == rest
    assert seen + rest != first_epoch  # a new order each epoch
    with pytest.raises(ValueError, match="same seed"):
        ResumableDataLoader(data, batch_size=3, seed=8).load_state_dict(state)


def test_a_position_at_an_epochs_end_is_the_next_epochs_start():
    """Lightning stops asking for batches at an epoch's known length, so the loader's generator never sees the end:
    the position saved there (or by an older checkpoint) must resume at the next epoch, not at an empty one."""
    data = list(range(10))
    loader = ResumableDataLoader(data, batch_size=3, seed=7)
    iterator = iter(loader)
    epoch0 = [next(iterator).tolist() for _ in range(len(loader))]  # every batch, the generator left suspended
    assert loader.state_dict() == {"epoch": 1, "batches_done": 0, "seed": 7, "global_batch_rows": 3}
    straight = ResumableDataLoader(data, batch_size=3, seed=7)
    assert [b.tolist() for b in straight] == epoch0
    epoch1 = [b.tolist() for b in straight]  # a straight run's second epoch
    for state in ({"epoch": 1, "batches_done": 0, "seed": 7}, {"epoch": 0, "batches_done": 4, "seed": 7}):
        resumed = ResumableDataLoader(data, batch_size=3, seed=7)
        resumed.load_state_dict(state)
        assert [b.tolist() for b in resumed] == epoch1 != epoch0


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)

    def crash_mid_write(obj, f, *args, **kwargs):
        if hasattr(f, "write"):
            f.write(b"half a checkpoint")
        else:
            Path(f).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


@pytest.mark.parametrize("signum", [pytest.param(name, marks=pytest.mark.slow) for name in ("SIGINT", "SIGTERM")])
def test_a_signal_to_the_cli_checkpoints_records_interrupted_and_resumes(tmp_path, signum):
    """A real `python train.py` process stopped with Ctrl-C (SIGINT) or SIGTERM saves last.ckpt, records
    `interrupted` with the step, exits with 128 + the signal number, tells how to resume, and resumes."""
    args = [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={tmp_path}", "trainer.max_steps=40",
            "data.test_split=null", "data.batch_size=4", "trainer.enable_progress_bar=false",
            "trainer.log_every_n_steps=1"]  # fmt: skip
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "hparams.yaml").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # a few steps in
    process.send_signal(getattr(signal, signum))
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + getattr(signal, signum), output[-2000:]
    step = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 0 < step < 40, output[-2000:]
    assert f"received {signum}" in output and f"hydra.run.dir={tmp_path} ckpt_path=last" in output
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "interrupted" and status["step"] == step and status["checkpoint"].endswith("last.ckpt")

    resumed = subprocess.run([*args, "ckpt_path=last"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 40
    assert sorted(losses(tmp_path)) == list(range(40))
    attempts = json.loads((tmp_path / "status.json").read_text())["attempts"]
    assert [a["status"] for a in attempts] == ["interrupted", "completed"]
