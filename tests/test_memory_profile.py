"""The memory profile's callback inside a real training run: every group is measured, the saved activations are
attributed to layer types, and the counts add up to what the tensors hold."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.memory_profile import layer_group, tensor_mib
from tests.conftest import TINY_OVERRIDES, compose_train
from train import run_and_record


def test_layer_groups_and_storages_counted_once():
    probs = torch.zeros(2, 4, 8, 8)
    assert layer_group(["SimPOModule", "LlamaModel", "LlamaDecoderLayer", "LlamaAttention"], probs) == (
        "attention probabilities (B, heads, T, T)"
    )
    assert layer_group(["LlamaModel", "LlamaDecoderLayer", "LlamaMLP", "Linear"], probs[0]) == "MLP"
    assert layer_group(["SimPOModule", "SimPO"], probs) == "head and loss (outside the decoder)"
    assert layer_group([], probs) == "head and loss (outside the decoder)"
    whole = torch.zeros(2**18)  # 1 MiB of float32
    assert tensor_mib([whole, whole[:10], whole.view(2, -1)]) == 1.0


@pytest.mark.slow  # a training run (~8 s) for a benchmark tool
def test_the_callback_profiles_a_real_step(tmp_path):
    path = tmp_path / "profile.json"
    run_and_record(compose_train(tmp_path / "run", [*TINY_OVERRIDES, "trainer.max_steps=3",
                                                   "model.gradient_checkpointing=false",  # as the driver runs it
                                                   "+callbacks.memory._target_=benchmarks.memory_profile.MemoryProfile",
                                                   f"+callbacks.memory.path={path}"]))  # fmt: skip
    record = json.loads(path.read_text())
    parameters = record["parameters"]
    assert parameters > 0 and record["gradients"] == parameters and record["optimizer_state"] >= 2 * parameters
    assert {"MLP", "norms", "attention (q, k, v, output, rope)", "head and loss (outside the decoder)"} <= set(
        record["saved"]
    )
    assert all(value > 0 for value in record["saved"].values() if value) and record["batch"] > 0
    # the kernel updates a process's RSS counters in batches: the high-water mark may trail by a little
    assert record["hwm_after_step"] + 4 >= record["rss_after_forward"] > 0 and record["rss_train_start"] > 0
