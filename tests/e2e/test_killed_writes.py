"""kill -9 in the middle of a checkpoint save and of the Hugging Face export (real ``python train.py`` processes):
the previous checkpoint or export stays whole, and the next start leaves no temporary behind."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simpo.io import read_torch_file
from train import ROOT

pytestmark = pytest.mark.slow

# The bundled default model (a ~100 MB checkpoint with AdamW's state, a 33 MB export): long enough to be caught.
QUICK = ["validate_before_training=false", "trainer.limit_val_batches=0", "trainer.enable_progress_bar=false",
         "data.batch_size=2"]  # fmt: skip
TEMPORARY = re.compile(r"^\..+\.(tmp|old)-")


def command(run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={run_dir}", *QUICK, *overrides]


def run(run_dir: Path, *overrides: str, code: int = 0, env: dict | None = None) -> str:
    out = subprocess.run(command(run_dir, *overrides), cwd=run_dir.parent, capture_output=True, text=True, timeout=600,
                         env=env)  # fmt: skip
    assert out.returncode == code, (out.stdout + out.stderr)[-3000:]
    return out.stdout + out.stderr


def kill_when(run_dir: Path, overrides: list[str], appears: str, after: str | None = None, env: dict | None = None
              ) -> Path:  # fmt: skip
    """Start ``train.py``, wait until ``after`` exists (if given) and a temporary named ``.<appears>.tmp-*`` appears in
    ``run_dir`` (or its ``checkpoints/``), SIGKILL it at once; returns the temporary."""
    process = subprocess.Popen(command(run_dir, *overrides), cwd=run_dir.parent, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=env)  # fmt: skip
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if after is None or (run_dir / after).exists():
                for directory in (run_dir, run_dir / "checkpoints"):
                    found = list(directory.glob(f".{appears}.tmp-*")) if directory.is_dir() else []
                    if found:
                        os.kill(process.pid, signal.SIGKILL)
                        process.wait()
                        return found[0]
            time.sleep(0.002)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    raise AssertionError(f"no temporary of {appears} appeared before the run ended ({process.returncode})")


def temporaries(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob(".*") if TEMPORARY.match(p.name))


def digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_kill_during_a_checkpoint_save_keeps_the_previous_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    tmp = kill_when(run_dir, ["trainer.max_steps=8", "callbacks.model_checkpoint.every_n_train_steps=1"],
                    appears="last.ckpt", after="checkpoints/last.ckpt")  # fmt: skip
    assert tmp.exists(), "killed after the rename: not the middle of a save"
    step = read_torch_file(run_dir / "checkpoints" / "last.ckpt")["global_step"]  # whole, not cut short
    assert 1 <= step < 8
    run(run_dir, "ckpt_path=last", f"trainer.max_steps={step + 1}", "callbacks.model_checkpoint.every_n_train_steps=1")
    assert read_torch_file(run_dir / "checkpoints" / "last.ckpt")["global_step"] == step + 1
    assert temporaries(run_dir) == []


def test_kill_during_the_export_keeps_the_previous_export(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run(run_dir, "trainer.max_steps=2")
    before = digest(run_dir / "hf")
    tmp = kill_when(run_dir, ["ckpt_path=last", "trainer.max_steps=4"], appears="hf")
    assert tmp.is_dir(), "killed after the swap: not the middle of an export"
    assert digest(run_dir / "hf") == before
    run(run_dir, "ckpt_path=last", "trainer.max_steps=6")
    assert digest(run_dir / "hf") != before and (run_dir / "hf" / "model.safetensors").is_file()
    assert temporaries(run_dir) == []


def test_a_run_killed_in_its_first_save_is_no_dead_end(tmp_path):
    """Killed while writing its first checkpoint, a run has nothing to resume: ``ckpt_path=last`` says so and how to
    start again, and the requeued command (``ckpt_path=auto``, or none) starts it again. Nothing is written to the
    system's temporary directory."""
    run_dir, system_tmp = tmp_path / "run", tmp_path / "system_tmp"
    system_tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(system_tmp)}
    every = ["trainer.max_steps=4", "callbacks.model_checkpoint.every_n_train_steps=2"]
    tmp = kill_when(run_dir, every, appears="last.ckpt", env=env)
    assert tmp.exists() and not (run_dir / "checkpoints" / "last.ckpt").exists(), "not the middle of the first save"
    text = run(run_dir, "ckpt_path=last", *every, code=1, env=env)
    assert "never saved a checkpoint: start it again with ckpt_path=auto, or without ckpt_path" in text, text[-3000:]
    run(run_dir, "ckpt_path=auto", *every, env=env)
    assert read_torch_file(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 4
    assert temporaries(run_dir) == [] and list(system_tmp.iterdir()) == []
