"""Distributed training on CPU: FSDP2 over 2 gloo processes equals 1 process on the same global batch;
sharded checkpoints resume on 2 and on 1 process; the Hugging Face export of a sharded run reloads."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from data import resumable_loader
from data.resumable_loader import EpochShuffleSampler
from simpo.runs.resume import read_checkpoint
from train import ROOT

COMMON = ["data.test_split=null", "trainer.log_every_n_steps=1", "validate_before_training=false",
          "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "trainer.accelerator=cpu",
          "trainer.max_steps=4", "callbacks.model_checkpoint.every_n_train_steps=2",
          "callbacks.model_checkpoint.save_top_k=-1"]  # fmt: skip
SINGLE = ["strategy=single", "data.batch_size=4"]  # global batch 4
FSDP2 = ["strategy=fsdp", "trainer.devices=2", "data.batch_size=2"]  # global batch 2 x 2
FSDP1 = ["strategy=fsdp", "trainer.devices=1", "data.batch_size=4"]


def run(run_dir: Path, *overrides: str) -> None:
    args = [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={run_dir}", *COMMON, *overrides]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]


def losses(run_dir: Path) -> dict[int, float]:
    with (run_dir / "metrics.csv").open(newline="") as handle:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(handle) if r.get("train/loss")}


def test_sampler_gives_the_same_global_batches_for_any_number_of_processes(monkeypatch):
    def shares(world: int, batch: int) -> list[list[int]]:
        per_rank = []
        for rank in range(world):
            monkeypatch.setattr(resumable_loader, "_rank_and_world", lambda r=rank: (r, world))
            per_rank.append(EpochShuffleSampler(10, seed=3, batch_size=batch).indices())
        return per_rank

    (single,) = shares(1, 4)
    first, second = shares(2, 2)
    assert first[:2] + second[:2] == single[:4] and first[2:4] + second[2:4] == single[4:8]
    assert len(first) == len(second) == 5  # 10 rows: 2 full global batches of 4, then 2 rows split 1 + 1
    uneven = shares(3, 2)  # 10 rows padded by wrapping to 12: nothing dropped, equal shares
    assert sorted({i for share in uneven for i in share}) == list(range(10)) and {len(s) for s in uneven} == {4}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dist")
    run(root / "single", *SINGLE)
    run(root / "fsdp2", *FSDP2)
    return {"single": root / "single", "fsdp2": root / "fsdp2", "root": root}


@pytest.mark.slow
def test_fsdp_on_two_processes_equals_one_process(runs):
    single, sharded = losses(runs["single"]), losses(runs["fsdp2"])
    assert sorted(sharded) == [0, 1, 2, 3]
    assert sharded[0] == pytest.approx(single[0], abs=1e-5)
    for step in range(4):
        assert sharded[step] == pytest.approx(single[step], abs=1e-4), step
    one = AutoModelForCausalLM.from_pretrained(runs["single"] / "hf").state_dict()
    two = AutoModelForCausalLM.from_pretrained(runs["fsdp2"] / "hf").state_dict()
    assert one.keys() == two.keys()
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-4), name


@pytest.mark.slow
def test_ddp_on_two_processes_equals_one_process(runs):
    run(runs["root"] / "ddp", "strategy=ddp", "trainer.devices=2", "data.batch_size=2")
    single, ddp = losses(runs["single"]), losses(runs["root"] / "ddp")
    for step in range(4):
        assert ddp[step] == pytest.approx(single[step], abs=1e-4), step


@pytest.mark.slow
def test_sharded_checkpoints_and_export(runs):
    ckpt = runs["fsdp2"] / "checkpoints" / "step000002.ckpt"
    assert ckpt.is_dir() and (ckpt / "meta.pt").is_file() and read_checkpoint(ckpt).global_step == 2
    assert read_checkpoint(runs["fsdp2"] / "checkpoints" / "last.ckpt").global_step == 4
    model = AutoModelForCausalLM.from_pretrained(runs["fsdp2"] / "hf")
    reference = AutoModelForCausalLM.from_pretrained(runs["single"] / "hf")
    ids = torch.tensor([[128000, 9906, 1917, 11, 1268, 527, 499]])
    assert torch.allclose(model(input_ids=ids).logits, reference(input_ids=ids).logits, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["fsdp2", "fsdp1"])
def test_sharded_checkpoint_resumes_on_two_and_one_process(runs, layout):
    resumed = runs["root"] / f"resume-{layout}"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(runs["fsdp2"] / "checkpoints" / "step000002.ckpt", resumed / "checkpoints" / "last.ckpt")
    run(resumed, *(FSDP2 if layout == "fsdp2" else FSDP1), "ckpt_path=last")
    assert read_checkpoint(resumed / "checkpoints" / "last.ckpt").global_step == 4
    got, straight = losses(resumed), losses(runs["fsdp2"])
    assert sorted(got) == [2, 3]
    for step in (2, 3):
        assert got[step] == pytest.approx(straight[step], abs=1e-4), step
