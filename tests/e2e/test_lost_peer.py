"""A process of a multi-process run killed with -9 (real processes): the survivor stops with one line that names the
dead rank and how to resume, never gloo's raw "Connection reset by peer"; the run resumes from its checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.test_checkpoint_files import run_command

ROOT = Path(__file__).resolve().parents[2]


def children(pid: int) -> list[int]:
    """The process ids whose parent is ``pid`` (Lightning's launcher starts rank 1 as a child of rank 0)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.slow  # a 2-process DDP run on CPU, killed, then resumed
def test_a_rank_killed_with_sigkill_is_named_and_the_run_resumes(tmp_path):
    run_dir = tmp_path / "run"
    args = [f"hydra.run.dir={run_dir}", "strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
            "data.batch_size=2", "trainer.max_steps=200", "trainer.enable_progress_bar=false",
            "callbacks.model_checkpoint.every_n_train_steps=2", "validate_before_training=false"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    main = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.time() + 300
        while not (run_dir / "checkpoints" / "last.ckpt").exists():  # a step was taken and saved: training is on
            assert main.poll() is None and time.time() < deadline, "the run ended or never saved a checkpoint"
            time.sleep(0.2)
        (rank1,) = [pid for pid in children(main.pid) if "train.py" in Path(f"/proc/{pid}/cmdline").read_text()]
        os.kill(rank1, signal.SIGKILL)
        output, _ = main.communicate(timeout=300)
    finally:
        main.kill()
    errors = [line for line in output.splitlines() if "ERROR" in line]
    assert main.returncode == 1 and "Traceback" not in output, output[-3000:]
    assert len(errors) == 1 and f"PeerLostError: rank 1 (process {rank1}) was killed by SIGKILL at step" in errors[0]
    assert f"resume it with hydra.run.dir={run_dir} ckpt_path=last" in errors[0]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "rank 1" in status["error"]
    resumed = run_command("train.py", *args, "ckpt_path=last", "trainer.max_steps=" + str(status["step"] + 2),
                          cwd=tmp_path)  # fmt: skip
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
