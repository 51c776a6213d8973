"""DPO with a cached reference on 2 gloo processes (DDP and FSDP2) equals 1 process on the same global batch; the
table is computed in shares and gathered; a resume from a mid-run checkpoint reuses the table and repeats the
straight run's losses exactly."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from simpo.reference.table import ReferenceTable
from tests.conftest import ROOT

COMMON = ["loss=dpo", "loss.beta=0.1", "data.val_size=8", "trainer.log_every_n_steps=1",
          "validate_before_training=false", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
          "trainer.accelerator=cpu", "trainer.max_steps=4", "trainer.val_check_interval=4",
          "callbacks.model_checkpoint.every_n_train_steps=2", "callbacks.model_checkpoint.save_top_k=-1"]  # fmt: skip


def run(run_dir: Path, cache: Path, *overrides: str) -> str:
    args = [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={run_dir}", *COMMON, *overrides]
    env = {**__import__("os").environ, "SIMPO_CACHE": str(cache)}
    out = subprocess.run(args, capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out.stdout + out.stderr


def losses(run_dir: Path) -> dict[int, float]:
    with (run_dir / "metrics.csv").open(newline="") as handle:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(handle) if r.get("train/loss")}


@pytest.mark.slow
def test_dpo_cached_reference_on_two_processes_equals_one(small_pairs, tmp_path):
    data = f"data.dataset={small_pairs}"
    run(tmp_path / "single", tmp_path / "cache1", data, "strategy=single", "data.batch_size=4")
    (table,) = (tmp_path / "cache1" / "reference").glob("*.pt")
    log = run(tmp_path / "fsdp2", tmp_path / "cache2", data, "strategy=fsdp", "trainer.devices=2", "data.batch_size=2")
    assert "on each of 2 process(es)" in log
    (sharded_table,) = (tmp_path / "cache2" / "reference").glob("*.pt")
    one, two = ReferenceTable.load(table)[0], ReferenceTable.load(sharded_table)[0]
    assert one.keys.tolist() == two.keys.tolist() and len(one) == 32  # every pair, from both shares
    assert (one.values[:, :2] - two.values[:, :2]).abs().max() < 1e-4
    run(tmp_path / "ddp", tmp_path / "cache2", data, "strategy=ddp", "trainer.devices=2", "data.batch_size=2")
    single = losses(tmp_path / "single")
    for name in ("fsdp2", "ddp"):
        other = losses(tmp_path / name)
        assert sorted(other) == [0, 1, 2, 3], name
        for step in range(4):
            assert other[step] == pytest.approx(single[step], abs=1e-4), (name, step)

    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "single" / "checkpoints" / "step000002.ckpt", resumed / "checkpoints" / "last.ckpt")
    log = run(resumed, tmp_path / "cache1", data, "strategy=single", "data.batch_size=4", "ckpt_path=last")
    assert "loaded from" in log
    got = losses(resumed)
    assert sorted(got) == [2, 3]
    for step in (2, 3):
        assert got[step] == pytest.approx(single[step], abs=1e-6), step
