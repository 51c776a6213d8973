"""LoRA under every strategy on CPU (slow): FSDP2 over 2 gloo processes (frozen base, trainable adapters) and DDP
equal 1 process on the same global batch; a sharded adapter-only checkpoint resumes; the merged export of a sharded
run reloads; and the default run learns with LoRA (held-out accuracy >= 0.9)."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint import FileSystemReader
from transformers import AutoModelForCausalLM

from simpo.runs.resume import read_checkpoint
from tests.test_distributed import FSDP2, SINGLE, losses, run
from train import ROOT

pytestmark = pytest.mark.slow
LORA = ["peft=lora", "peft.r=4", "peft.alpha=8", "optimizer.lr=1e-2"]
LORA_LR = 1e-2  # the learning rate at which the default run learns with LoRA (docs/lora.md)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lora-dist")
    run(root / "single", *SINGLE, *LORA)
    run(root / "fsdp2", *FSDP2, *LORA)
    return {"single": root / "single", "fsdp2": root / "fsdp2", "root": root}


def test_lora_under_fsdp_and_ddp_equals_one_process(runs):
    single = losses(runs["single"])
    run(runs["root"] / "ddp", "strategy=ddp", "trainer.devices=2", "data.batch_size=2", *LORA)
    for other in (losses(runs["fsdp2"]), losses(runs["root"] / "ddp")):
        assert sorted(other) == [0, 1, 2, 3]
        for step in range(4):
            assert other[step] == pytest.approx(single[step], abs=1e-4), step
    assert single[3] < single[0]


def test_sharded_adapter_checkpoint_resumes_and_the_merged_export_reloads(runs):
    ckpt = runs["fsdp2"] / "checkpoints" / "step000002.ckpt"
    assert ckpt.is_dir() and read_checkpoint(ckpt).global_step == 2
    stored = FileSystemReader(ckpt).read_metadata().state_dict_metadata
    weights = [k for k in stored if k.startswith("state_dict.")]
    assert len(weights) == 2 * 7 * 2 and all(".lora_A." in k or ".lora_B." in k for k in weights)  # no frozen base
    resumed = runs["root"] / "resume-fsdp2"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(ckpt, resumed / "checkpoints" / "last.ckpt")
    run(resumed, *FSDP2, *LORA, "ckpt_path=last")
    got, straight = losses(resumed), losses(runs["fsdp2"])
    assert sorted(got) == [2, 3]
    for step in (2, 3):
        assert got[step] == pytest.approx(straight[step], abs=1e-4), step
    sharded = AutoModelForCausalLM.from_pretrained(runs["fsdp2"] / "hf")
    single = AutoModelForCausalLM.from_pretrained(runs["single"] / "hf")
    ids = torch.tensor([[128000, 9906, 1917, 11, 1268, 527, 499]])
    assert torch.allclose(sharded(input_ids=ids).logits, single(input_ids=ids).logits, atol=1e-4)


def test_the_default_run_learns_with_lora(tmp_path):
    """``python train.py peft=lora optimizer.lr=1e-2``: the bundled default (80 steps) with adapters only."""
    args = [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={tmp_path}", "peft=lora",
            f"optimizer.lr={LORA_LR}", "trainer.enable_progress_bar=false"]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    with (tmp_path / "metrics.csv").open(newline="") as handle:
        accuracy = [float(r["val/rewards/accuracies"]) for r in csv.DictReader(handle) if r["val/rewards/accuracies"]]
    assert accuracy[0] < 0.6 and accuracy[-1] >= 0.9, accuracy
    assert (tmp_path / "checkpoints" / "last.ckpt").stat().st_size < 2 * 1024**2  # adapters only (full: ~100 MB)
