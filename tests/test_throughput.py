"""The throughput callback in a tiny training run: tokens/s and peak memory per optimizer step."""

from __future__ import annotations

import csv

import pytest

from callbacks.throughput import peak_flops
from tests.conftest import TINY_OVERRIDES, compose_train
from train import train


def test_logs_tokens_per_sec_and_peak_memory_every_optimizer_step(tmp_path):
    overrides = [*TINY_OVERRIDES, "trainer.max_steps=4", "trainer.accumulate_grad_batches=2",
                 "data.test_split=null", "callbacks.hf_export=null", "callbacks.model_checkpoint=null"]  # fmt: skip
    train(compose_train(tmp_path, overrides))
    with (tmp_path / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    tokens = {int(r["step"]): float(r["train/tokens_per_sec"]) for r in rows if r.get("train/tokens_per_sec")}
    memory = {int(r["step"]): float(r["train/peak_memory_mb"]) for r in rows if r.get("train/peak_memory_mb")}
    assert sorted(tokens) == sorted(memory) == [0, 1, 2, 3]  # once per optimizer step, not per micro-batch
    # 2 micro-batches of 8 sequences of up to 128 tokens each, in well under a minute and over a millisecond
    assert all(16 / 60 < v < 2 * 8 * 128 * 1000 for v in tokens.values())
    assert all(100 < v < 24 * 1024 for v in memory.values())  # MiB: torch + a 128k-vocabulary model, < RAM
    assert "train/mfu" not in rows[0]  # GPU only


def test_peak_flops_table():
    assert peak_flops("NVIDIA H100 80GB HBM3") == pytest.approx(989e12)
    assert peak_flops("NVIDIA H100 PCIe") == pytest.approx(756e12)
    assert peak_flops("NVIDIA H200") == pytest.approx(989e12)
    assert peak_flops("NVIDIA A100-SXM4-80GB") == pytest.approx(312e12)
    assert peak_flops("Some Future GPU") is None
