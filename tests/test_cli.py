"""The command line as a user runs it: `python train.py` (the bundled default) and `--help`."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_OVERRIDES, compose_train
from train import ROOT, train


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def test_help_lists_groups_and_knobs():
    out = run_cli("--help")
    assert out.returncode == 0, out.stderr
    for text in ("model.name_or_path", "data.dataset", "loss.gamma_beta_ratio", "optimizer.warmup_ratio",
                 "logger=csv|tensorboard|wandb", "ckpt_path", "trainer",
                 "experiment: gemma-2-9b-it-dpo, gemma-2-9b-it-simpo", "hparams_search: cpo_grid, dpo_grid",
                 "loss: cpo, dpo, ipo, kto, orpo, rdpo, rrhf, simpo, slic",
                 "reference=cached|model|adapter_off", "loss.tau=", "experiment=setting/<setting>"):  # fmt: skip
        assert text in out.stdout, text


@pytest.mark.slow  # the README's whole default run (80 steps, ~47 s): the suite's budget is 7 minutes
def test_default_run_learns_the_bundled_preferences(tmp_path):
    """`python train.py` as documented: the tiny default must reach val/rewards/accuracies >= 0.9."""
    out = run_cli(f"hydra.run.dir={tmp_path}", cwd=tmp_path)  # from another directory, too
    assert out.returncode == 0, out.stderr[-3000:]
    with (tmp_path / "metrics.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("val/rewards/accuracies")]
    accuracy = {int(r["step"]): float(r["val/rewards/accuracies"]) for r in rows}
    assert 0.2 < accuracy[0] < 0.7  # random policy: about chance before training
    assert accuracy[max(accuracy)] >= 0.9
    assert (tmp_path / "hf" / "model.safetensors").is_file() and (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert "Epoch 0" in out.stdout + out.stderr  # the progress bar


@pytest.mark.parametrize("logger", ["tensorboard", "wandb"])
def test_other_loggers(tmp_path, monkeypatch, logger):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    overrides = [*TINY_OVERRIDES, f"logger={logger}", "trainer.max_steps=2", "validate_before_training=false"]
    train(compose_train(tmp_path, overrides))
    if logger == "tensorboard":
        assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    else:
        runs = list((tmp_path / "wandb").glob("offline-run-*"))
        run_id = (tmp_path / "wandb_run_id").read_text()
        assert runs and list(runs[0].glob("*.wandb")) and runs[0].name.endswith(run_id)


def test_evaluate_help():
    out = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--help"], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    for text in ("tasks", "generate.prompts", "judge.reward_model", "preference.max_pairs", "ckpt_path"):
        assert text in out.stdout, text
