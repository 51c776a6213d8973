"""Extending a finished run by epochs (real processes): ``trainer.max_epochs=2 ckpt_path=last`` after a one-epoch run
trains the second epoch, as ``trainer.max_steps`` does for steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.e2e.test_checkpoint_files import run_command

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # two train.py processes
def test_a_finished_one_epoch_run_extended_to_two_epochs_trains_the_second(tmp_path):
    rows = (ROOT / "data" / "tiny_prefs" / "train_prefs.jsonl").read_text().splitlines()[:12]
    (tmp_path / "prefs.jsonl").write_text("\n".join(rows) + "\n")
    run_dir = tmp_path / "run"
    args = [f"hydra.run.dir={run_dir}", f"data.dataset={tmp_path / 'prefs.jsonl'}", "data.batch_size=4",
            "trainer.max_epochs=1", "trainer.val_check_interval=1.0", "trainer.enable_progress_bar=false",
            "callbacks.model_checkpoint.every_n_train_steps=2"]  # fmt: skip  # last.ckpt of step 3 by FinalCheckpoint
    first = run_command("train.py", *args, cwd=tmp_path)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    assert json.loads((run_dir / "status.json").read_text())["step"] == 3
    second = run_command("train.py", *args, "trainer.max_epochs=2", "ckpt_path=last", cwd=tmp_path)
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "completed" and status["step"] == 6
    assert [attempt["status"] for attempt in status["attempts"]] == ["completed", "completed"]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 6
    position = checkpoint["PreferenceDataModule"]["train_loader"]
    assert (position["epoch"], position["batches_done"]) == (2, 0)  # both epochs done, the next one not begun
