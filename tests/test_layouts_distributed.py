"""The non-padded batch layouts under FSDP2 on 2 gloo CPU processes (issue 11, item 4): each process packs its own
share of the global batch, and the losses, the exported weights and a resume from a sharded checkpoint equal the
1-process padded run (every layout scores the same tokens with the same result, so the padded run is the reference
for all of them); the ``packed`` run also uses ``model.head_backward=store``, whose gradient of the gathered head
weight FSDP2 must reduce-scatter like recompute's."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from simpo.runs.resume import read_checkpoint
from tests.test_distributed import FSDP2, SINGLE, losses, run

LAYOUT_RUNS = {
    "packed": ["data.layout=packed", "model.head_backward=store"],
    "shared_prompt_packed": ["data.layout=shared_prompt_packed"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("layouts-dist")
    run(root / "single", *SINGLE)  # padded, 1 process, global batch 4
    for name, overrides in LAYOUT_RUNS.items():
        run(root / name, *FSDP2, *overrides)  # 2 processes x 2 pairs
    return {"root": root, "single": root / "single", **{name: root / name for name in LAYOUT_RUNS}}


@pytest.mark.slow
@pytest.mark.parametrize("layout", sorted(LAYOUT_RUNS))
def test_layout_under_fsdp_on_two_processes_equals_one_padded_process(runs, layout):
    single, sharded = losses(runs["single"]), losses(runs[layout])
    assert sorted(sharded) == [0, 1, 2, 3]
    for step in range(4):
        assert sharded[step] == pytest.approx(single[step], abs=1e-4), step
    one = AutoModelForCausalLM.from_pretrained(runs["single"] / "hf").state_dict()
    two = AutoModelForCausalLM.from_pretrained(runs[layout] / "hf").state_dict()
    assert one.keys() == two.keys()
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-4), (layout, name)


@pytest.mark.slow
def test_layout_resume_from_a_sharded_checkpoint_is_exact(runs):
    """Steps 2-3 resumed from the step-2 checkpoint equal the straight run's (same layout, same 2 processes)."""
    layout = "shared_prompt_packed"
    resumed = runs["root"] / f"resume-{layout}"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(runs[layout] / "checkpoints" / "step000002.ckpt", resumed / "checkpoints" / "last.ckpt")
    run(resumed, *FSDP2, *LAYOUT_RUNS[layout], "ckpt_path=last")
    assert read_checkpoint(resumed / "checkpoints" / "last.ckpt").global_step == 4
    got, straight = losses(resumed), losses(runs[layout])
    assert sorted(got) == [2, 3]
    for step in (2, 3):
        assert got[step] == pytest.approx(straight[step], abs=1e-6), step
    one = AutoModelForCausalLM.from_pretrained(runs[layout] / "hf").state_dict()
    two = AutoModelForCausalLM.from_pretrained(resumed / "hf").state_dict()
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-6), name
