"""``simpo.io.read_torch_file``: plain data loads, code in a file never runs, truncation and payloads have their own
messages; a sharded checkpoint's ``.metadata`` is checked the same way."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

from simpo.config.entrypoint import build_loss
from simpo.errors import CheckpointError, UserError
from simpo.io import read_torch_file
from simpo.objectives import SimPO

ASSET = Path(__file__).resolve().parents[1] / "assets" / "main-2026-12-06.ckpt"


class Payload:
    """Pickles as a call of ``os.system`` that creates ``marker``: what a hostile checkpoint carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_of_main_reads_as_plain_data():
    checkpoint = read_torch_file(ASSET)
    assert checkpoint["global_step"] == 2 and checkpoint["hyper_parameters"]["config"]["loss"]["beta"] == 2.0
    assert all(isinstance(t, torch.Tensor) for t in checkpoint["state_dict"].values())


def test_a_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "shared.ckpt"
    torch.save({"global_step": 1, "extra": Payload(marker)}, path)
    with pytest.raises(CheckpointError, match=r"ckpt_path=.*shared\.ckpt holds Python objects that are never loaded "
                                              r"\(it refers to posix\.system\)") as caught:  # fmt: skip
        read_torch_file(path)
    assert isinstance(caught.value, UserError) and isinstance(caught.value, ValueError)
    assert not marker.exists()


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("size", [0, 2, 100, 5000, 400_000, -100])
def test_a_truncated_file_says_it_is_truncated(tmp_path, size, mmap):
    path = tmp_path / "cut.ckpt"
    path.write_bytes(ASSET.read_bytes()[:size])
    with pytest.raises(CheckpointError, match=r"reference=.*cut\.ckpt is not a complete checkpoint \(truncated: "):
        read_torch_file(path, key="reference", mmap=mmap)


def test_other_files_and_missing_ones_are_named(tmp_path):
    (tmp_path / "notes.ckpt").write_text("these are notes, not a checkpoint")
    with pytest.raises(CheckpointError, match=r"notes\.ckpt is not a checkpoint \(not written by torch\.save"):
        read_torch_file(tmp_path / "notes.ckpt")
    with pytest.raises(CheckpointError, match=r"ckpt_path=.*nothing\.ckpt: no such file"):
        read_torch_file(tmp_path / "nothing.ckpt")
    with pytest.raises(CheckpointError, match=r"a directory but no sharded checkpoint \(no meta\.pt\)"):
        read_torch_file(tmp_path)


def sharded_checkpoint(path: Path) -> Path:
    """A sharded checkpoint as ``AtomicModelParallelStrategy`` writes it: DCP shards, ``.metadata``, ``meta.pt``."""
    dcp.save({"state_dict": {"w": torch.ones(3, 4), "b": torch.zeros(2, dtype=torch.bfloat16)}}, checkpoint_id=path)
    torch.save({"global_step": 3}, path / "meta.pt")
    return path


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_a_sharded_checkpoint_reads_its_meta(tmp_path):
    assert read_torch_file(sharded_checkpoint(tmp_path / "last.ckpt")) == {"global_step": 3}


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_a_sharded_checkpoint_with_a_payload_in_its_metadata_is_refused(tmp_path):
    path = sharded_checkpoint(tmp_path / "last.ckpt")
    marker = tmp_path / "ran"
    (path / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(CheckpointError, match=r"\.metadata holds Python objects that are never loaded \(it refers to "
                                              r"posix\.system\)"):  # fmt: skip
        read_torch_file(path)
    assert not marker.exists()
    (path / ".metadata").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"\.metadata is truncated"):
        read_torch_file(path)


def test_a_stored_objective_builds_only_objectives():
    stored = "the training config of ckpt_path=x.ckpt"
    assert isinstance(build_loss({"_target_": "simpo.objectives.simpo.SimPO", "beta": 2.0}, stored), SimPO)
    assert isinstance(build_loss({"_target_": "simpo.loss.SimPOLoss", "beta": 2.0}, stored), SimPO)  # older runs
    with pytest.raises(CheckpointError, match=r"loss\._target_='os\.system' in the training config of ckpt_path=x"):
        build_loss({"_target_": "os.system", "_args_": ["true"]}, stored)
    with pytest.raises(CheckpointError, match=r"loss\.beta in .* is a dict, not a number or string"):
        build_loss({"_target_": "simpo.objectives.simpo.SimPO", "beta": {"_target_": "os.getpid"}}, stored)


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_a_payload_among_the_shards_entries_is_refused_and_never_runs(tmp_path):
    """DCP stores a shard's non-tensor entries (the optimizer's settings) as pickles and loads them with
    ``weights_only=False``: the reader and the strategy's load planner both read them as plain data."""
    from simpo.training.fsdp import PlainDataLoadPlanner

    marker = tmp_path / "ran"
    path = tmp_path / "last.ckpt"
    state = {"state_dict": {"w": torch.ones(2)}, "optimizer_0": {"param_groups": [{"lr": 0.1, "name": "decay"}]}}
    dcp.save(state, checkpoint_id=path)
    torch.save({"global_step": 3}, path / "meta.pt")
    assert read_torch_file(path) == {"global_step": 3}
    loaded = {"state_dict": {"w": torch.zeros(2)}, "optimizer_0": {"param_groups": [{"lr": 0.0, "name": ""}]}}
    dcp.load(loaded, checkpoint_id=path, planner=PlainDataLoadPlanner(path))
    assert loaded["optimizer_0"]["param_groups"][0] == {"lr": 0.1, "name": "decay"}
    assert torch.equal(loaded["state_dict"]["w"], torch.ones(2))

    state["optimizer_0"]["param_groups"][0]["lr"] = Payload(marker)
    dcp.save(state, checkpoint_id=path)
    with pytest.raises(CheckpointError, match=r"distcp holds Python objects that are never loaded \(it refers to "
                                              r"posix\.system\)"):  # fmt: skip
        read_torch_file(path)
    with pytest.raises(BaseException) as caught:  # DCP's CheckpointException (a BaseException) holds each rank's error
        dcp.load(loaded, checkpoint_id=path, planner=PlainDataLoadPlanner(path))
    assert "holds Python objects that are never loaded" in repr(getattr(caught.value, "failures", caught.value))
    assert not marker.exists()
