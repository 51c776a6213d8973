"""Checkpoints handed to the commands as a user would: a hostile one never runs its code (real processes), and a
checkpoint written by an earlier main still resumes and evaluates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from simpo.io import read_torch_file
from tests.conftest import compose_train
from tests.simpo.test_io import ASSET, Payload
from train import ROOT, run_and_record

# The asset's own model and data settings (tests/assets/README.md): a resume must match them.
ASSET_SETTINGS = [
    "model.tokenizer=mistral-v1", "model.architecture.hidden_size=2", "model.architecture.intermediate_size=4",
    "model.architecture.num_attention_heads=1", "model.architecture.num_key_value_heads=1",
    "model.architecture.num_hidden_layers=1", "data.batch_size=2", "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false",
]  # fmt: skip


def run_command(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def hostile_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """The asset with one more entry whose unpickling would create ``marker``; returns (checkpoint, marker)."""
    marker = tmp_path / "code-ran"
    checkpoint = read_torch_file(ASSET)
    checkpoint["callbacks"]["extra"] = Payload(marker)
    path = tmp_path / "downloaded.ckpt"
    torch.save(checkpoint, path)
    return path, marker


def assert_refused_in_one_line(out: subprocess.CompletedProcess, marker: Path, expected: str) -> None:
    text = out.stdout + out.stderr
    assert out.returncode == 1, text[-3000:]
    assert not marker.exists()
    assert "Traceback" not in text, text[-3000:]
    errors = [line for line in text.splitlines() if expected in line]
    assert len(errors) == 1 and "CheckpointError" in errors[0], text[-3000:]


def test_train_refuses_a_checkpoint_that_carries_code(tmp_path):
    path, marker = hostile_checkpoint(tmp_path)
    out = run_command("train.py", f"hydra.run.dir={tmp_path / 'run'}", f"ckpt_path={path}", "trainer.max_steps=4",
                      *ASSET_SETTINGS, cwd=tmp_path)  # fmt: skip
    assert_refused_in_one_line(out, marker, "downloaded.ckpt holds Python objects that are never loaded")
    assert not (tmp_path / "run" / "status.json").exists()


def test_evaluate_refuses_a_checkpoint_that_carries_code(tmp_path):
    path, marker = hostile_checkpoint(tmp_path)
    out = run_command("evaluate.py", f"hydra.run.dir={tmp_path / 'eval'}", f"ckpt_path={path}", cwd=tmp_path)
    assert_refused_in_one_line(out, marker, "downloaded.ckpt holds Python objects that are never loaded")
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_evaluate_builds_nothing_but_an_objective_from_a_checkpoint_config(tmp_path):
    """A checkpoint of plain data whose stored config names a function as its objective: never called."""
    marker = tmp_path / "code-ran"
    checkpoint = read_torch_file(ASSET)
    checkpoint["hyper_parameters"]["config"]["loss"] = {"_target_": "os.system", "_args_": [f"touch {marker}"]}
    path = tmp_path / "downloaded.ckpt"
    torch.save(checkpoint, path)
    out = run_command("evaluate.py", f"hydra.run.dir={tmp_path / 'eval'}", f"ckpt_path={path}", cwd=tmp_path)
    assert_refused_in_one_line(out, marker, "loss._target_='os.system' in the training config of ckpt_path=")


def test_a_checkpoint_of_an_earlier_main_resumes_and_evaluates(tmp_path):
    from evaluate import evaluate
    from tests.test_evaluate import compose_eval

    run_dir = tmp_path / "resumed"
    overrides = [*ASSET_SETTINGS, f"ckpt_path={ASSET}", "trainer.max_steps=3", "trainer.val_check_interval=3"]
    run_and_record(compose_train(run_dir, overrides))
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "completed" and status["step"] == 3, status
    assert not [key for key in status.get("changed", {}) if key.endswith("_target_")], status["changed"]
    metrics = evaluate(compose_eval(tmp_path / "eval", [f"ckpt_path={ASSET}", "preference.max_pairs=8"]))
    assert metrics["pairs"] == 8  # the same numbers as evaluate.py of the main that wrote the asset printed:
    assert metrics["loss"] == pytest.approx(1.30961, rel=1e-5) and metrics["rewards/accuracies"] == 0.5
    assert metrics["rewards/margins"] == pytest.approx(0.00512255, rel=1e-4)
    assert metrics["rewards/chosen"] == pytest.approx(-20.7391, rel=1e-5)
