"""Sweeps: every run in its own directory, failures recorded and skipped, summary.csv / summary.md best first."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import datetime

import pytest

from callbacks.sweep_summary import collect_runs, write_summary
from train import ROOT

FAST = ["trainer.max_steps=3", "trainer.val_check_interval=3", "trainer.limit_val_batches=2",
        "trainer.enable_progress_bar=false", "data.batch_size=4"]  # fmt: skip


def fake_run(sweep_dir, number, status, accuracy=None, error=None):
    run = sweep_dir / str(number)
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(f"- optimizer.lr={number}e-7\n")
    if status is not None:
        metrics = {"val/rewards/accuracies": accuracy} if accuracy is not None else {}
        (run / "status.json").write_text(json.dumps({"status": status, "metrics": metrics, "error": error}))


def test_summary_ranks_best_first_and_keeps_failures(tmp_path):
    fake_run(tmp_path, 0, "completed", 0.6)
    fake_run(tmp_path, 1, "failed", error="ValueError: bad\nthing")
    fake_run(tmp_path, 2, "completed", 0.9)
    fake_run(tmp_path, 3, None)  # killed before writing status.json
    fake_run(tmp_path, 10, "completed", 0.7)
    rows = collect_runs(tmp_path, "val/rewards/accuracies", "maximize")
    assert [(r["run"], r["status"]) for r in rows] == [
        ("2", "completed"), ("10", "completed"), ("0", "completed"), ("1", "failed"), ("3", "incomplete")]  # fmt: skip
    assert [r["run"] for r in collect_runs(tmp_path, "val/rewards/accuracies", "minimize")][:3] == ["0", "10", "2"]
    write_summary(rows, tmp_path)
    with (tmp_path / "summary.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert table[0]["overrides"] == "optimizer.lr=2e-7" and table[0]["val/rewards/accuracies"] == "0.9"
    markdown = (tmp_path / "summary.md").read_text()
    assert markdown.index("| 2 | completed") < markdown.index("| 0 | completed")
    assert "- run 1: ValueError: bad thing" in markdown


def test_a_run_an_earlier_sweep_left_is_not_reported_as_this_sweeps(tmp_path):
    fake_run(tmp_path, 0, "completed", 0.9)
    old = json.loads((tmp_path / "0" / "status.json").read_text())
    (tmp_path / "0" / "status.json").write_text(json.dumps({**old, "started": "2026-01-01T10:00:00"}))
    fake_run(tmp_path, 1, "completed", 0.5)
    fresh = json.loads((tmp_path / "1" / "status.json").read_text())
    (tmp_path / "1" / "status.json").write_text(json.dumps({**fresh, "started": "2026-06-01T10:00:00"}))
    since = datetime.fromisoformat("2026-06-01T09:00:00").timestamp()
    rows = {r["run"]: r for r in collect_runs(tmp_path, "val/rewards/accuracies", "maximize", since)}
    assert rows["1"]["status"] == "completed" and rows["1"]["val/rewards/accuracies"] == 0.5
    assert rows["0"]["status"] == "not run" and rows["0"]["val/rewards/accuracies"] is None  # never the old 0.9
    assert "holds an earlier run (completed)" in rows["0"]["error"]


def sweep(sweep_dir, *overrides, code=0):
    args = [sys.executable, str(ROOT / "train.py"), "-m", f"hydra.sweep.dir={sweep_dir}", *overrides, *FAST]
    out = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert out.returncode == code, out.stderr[-3000:]
    with (sweep_dir / "summary.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_a_sweep_whose_every_run_fails_exits_non_zero(tmp_path):
    rows = sweep(tmp_path, "optimizer.lr=-1.0,-2.0", code=1)
    assert [r["status"] for r in rows] == ["failed", "failed"]


@pytest.mark.slow
def test_a_sweep_rerun_into_its_own_directory_never_reports_the_old_runs_as_its_own(tmp_path):
    first = sweep(tmp_path, "optimizer.lr=1e-3")
    assert [r["status"] for r in first] == ["completed"]
    again = sweep(tmp_path, "optimizer.lr=1e-3", code=1)  # its run is refused: the directory holds a run
    assert [r["status"] for r in again] == ["not run"] and again[0]["val/rewards/accuracies"] == ""
    assert json.loads((tmp_path / "0" / "status.json").read_text())["status"] == "completed"  # the old run stays


@pytest.mark.slow
def test_grid_sweep_of_the_tiny_default_end_to_end(tmp_path):
    """`python train.py -m` over a 2 x 2 grid on CPU: four numbered runs, ranked by val/rewards/accuracies."""
    rows = sweep(tmp_path, "optimizer.lr=1e-3,1e-6", "loss.gamma_beta_ratio=0.0,0.5")
    assert sorted(r["run"] for r in rows) == ["0", "1", "2", "3"]
    assert all(r["status"] == "completed" and (tmp_path / r["run"] / "hf").is_dir() for r in rows)
    accuracies = [float(r["val/rewards/accuracies"]) for r in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    assert "optimizer.lr=0.001" in rows[0]["overrides"]  # 3 steps at lr 1e-3 beat 3 steps at 1e-6


@pytest.mark.slow
def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    rows = sweep(tmp_path, "optimizer.lr=-1.0,1e-3")  # a negative learning rate is refused by its key
    assert [r["status"] for r in rows] == ["completed", "failed"]
    assert "optimizer.lr must be a positive number" in rows[1]["error"] and rows[1]["run"] == "0"


@pytest.mark.slow
def test_optuna_sweep_runs(tmp_path):
    rows = sweep(tmp_path, "hparams_search=simpo_optuna", "hydra.sweeper.n_trials=2")
    assert len(rows) == 2 and all(r["status"] == "completed" for r in rows)
    assert (tmp_path / "optimization_results.yaml").is_file()


@pytest.mark.slow  # a real `train.py -m` process
def test_a_misspelled_optimized_metric_stops_the_sweep_before_anything_trains(tmp_path):
    args = [sys.executable, str(ROOT / "train.py"), "-m", f"hydra.sweep.dir={tmp_path}", "optimizer.lr=1e-3,1e-4",
            "optimized_metric=val/acuracy", *FAST]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, timeout=900)
    text = out.stdout + out.stderr
    errors = [line for line in text.splitlines() if "ERROR" in line]
    assert out.returncode == 1 and "Traceback" not in text, text[-3000:]
    assert len(errors) == 1 and "optimized_metric=val/acuracy" in errors[0] and "val/rewards/accuracies" in errors[0]
    record = json.loads((tmp_path / "0" / "status.json").read_text())
    assert record["status"] == "failed" and "optimized_metric=val/acuracy" in record["error"]
    assert not (tmp_path / "0" / "checkpoints").exists() and not (tmp_path / "1").exists()  # nothing trained
