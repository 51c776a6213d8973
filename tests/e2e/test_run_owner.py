"""A run directory has one owner (real processes): a second ``train.py`` started on a directory that a live run holds
is refused, naming the holder, and changes nothing; the first run finishes as if alone."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simpo.runs.lock import LOCK_FILE
from tests.e2e.test_checkpoint_files import run_command

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # two train.py processes, one of them training 80 steps (an epoch of the bundled data)
def test_a_second_start_on_a_live_runs_directory_is_refused_and_changes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    args = [f"hydra.run.dir={run_dir}", "trainer.max_steps=80", "trainer.val_check_interval=80",
            "trainer.limit_val_batches=2", "trainer.enable_progress_bar=false"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.time() + 300
        while time.time() < deadline:  # until the first run holds the directory (its lock names it)
            lock = run_dir / LOCK_FILE
            if lock.exists() and lock.read_text().strip() and json.loads(lock.read_text())["pid"] == first.pid:
                break
            assert first.poll() is None, first.stdout.read()[-3000:]
            time.sleep(0.2)
        else:
            pytest.fail("the first run never took its directory")
        second = run_command("train.py", *args, cwd=tmp_path)
        text = second.stdout + second.stderr
        assert second.returncode == 1 and "Traceback" not in text, text[-3000:]
        errors = [line for line in text.splitlines() if "ERROR" in line]
        assert len(errors) == 1, text[-3000:]
        assert f"is in use by process {first.pid} on host {socket.gethostname()}" in errors[0], errors
        output, _ = first.communicate(timeout=600)
    finally:
        first.kill()
    assert first.returncode == 0, output[-3000:]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "completed" and status["step"] == 80
    assert [attempt["status"] for attempt in status["attempts"]] == ["completed"]  # the refusal recorded nothing
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "hf" / "model.safetensors").is_file()
    assert not (run_dir / LOCK_FILE).exists()
