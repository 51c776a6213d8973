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


def run_files(run_dir: Path) -> dict[str, bytes]:
    """Every file of the run with its bytes, Hydra's own (``.hydra/``, ``train.log``: written for each command before
    the program starts) left out."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.relative_to(run_dir).parts[0] not in (".hydra", "train.log")}  # fmt: skip


@pytest.mark.slow  # two train.py processes
def test_a_resume_with_another_model_is_refused_by_key_and_leaves_the_finished_run_byte_for_byte(tmp_path):
    run_dir = tmp_path / "run"
    short = ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=2"]
    finished = run_command("train.py", f"hydra.run.dir={run_dir}", *short, cwd=tmp_path)
    assert finished.returncode == 0, (finished.stdout + finished.stderr)[-3000:]
    before = run_files(run_dir)
    out = run_command("train.py", f"hydra.run.dir={run_dir}", *short, "ckpt_path=last", "trainer.max_steps=4",
                      "model.architecture.intermediate_size=256", cwd=tmp_path)  # fmt: skip
    text = out.stdout + out.stderr
    assert out.returncode == 1 and "Traceback" not in text, text[-3000:]
    errors = [line for line in text.splitlines() if "ERROR" in line]
    assert len(errors) == 1, text[-3000:]
    assert "trained with another model than this config builds: model.architecture.intermediate_size: 192 in the " \
           "checkpoint, 256 here; 6 weight(s) of another shape (policy.model.layers.0.mlp.gate_proj.weight " \
           "(192, 64) -> (256, 64)" in errors[0], errors  # fmt: skip
    assert run_files(run_dir) == before  # status.json still completed, metrics.csv whole, checkpoint untouched


@pytest.mark.slow  # a real train.py process
def test_an_export_into_a_models_folder_is_refused_in_one_line_and_changes_nothing(tmp_path):
    folder = tmp_path / "models" / "llama"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"precious weights")
    (folder / "config.json").write_text("{}")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    out = run_command("train.py", f"hydra.run.dir={tmp_path / 'run'}", f"callbacks.hf_export.dirpath={folder}",
                      "overwrite=true", cwd=tmp_path)  # fmt: skip
    text = out.stdout + out.stderr
    errors = [line for line in text.splitlines() if "ERROR" in line]
    assert out.returncode == 1 and "Traceback" not in text and len(errors) == 1, text[-3000:]
    assert f"callbacks.hf_export.dirpath={folder} holds files this project did not write" in errors[0]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow  # three train.py processes
def test_two_runs_sharing_a_checkpoint_directory_and_ckpt_path_last_finding_it(tmp_path):
    shared = tmp_path / "scratch" / "ckpts"
    common = [f"callbacks.model_checkpoint.dirpath={shared}", "trainer.max_steps=2", "trainer.val_check_interval=2",
              "trainer.limit_val_batches=2", "trainer.enable_progress_bar=false"]  # fmt: skip
    first = run_command("train.py", f"hydra.run.dir={tmp_path / 'first'}", *common, cwd=tmp_path)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    saved = (shared / "last.ckpt").read_bytes()
    second = run_command("train.py", f"hydra.run.dir={tmp_path / 'second'}", *common, cwd=tmp_path)
    text = second.stdout + second.stderr
    errors = [line for line in text.splitlines() if "ERROR" in line]
    assert second.returncode == 1 and "Traceback" not in text and len(errors) == 1, text[-3000:]
    assert f"callbacks.model_checkpoint.dirpath={shared} holds the checkpoints of another run" in errors[0]
    assert (shared / "last.ckpt").read_bytes() == saved
    resumed = run_command("train.py", f"hydra.run.dir={tmp_path / 'first'}", *common, "ckpt_path=last",
                          "trainer.max_steps=3", cwd=tmp_path)  # fmt: skip
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    status = json.loads((tmp_path / "first" / "status.json").read_text())
    assert status["status"] == "completed" and status["step"] == 3
    assert status["resumed_from"] == str(shared / "last.ckpt")
