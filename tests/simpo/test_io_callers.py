"""Where the reader meets the commands: a half-swapped last.ckpt is finished before ckpt_path=last looks for it, a
sharded checkpoint needs strategy=fsdp, a model directory without a tokenizer is named before transformers fails."""

from __future__ import annotations

import json

import pytest

from simpo import io
from simpo.errors import CheckpointError, MissingFileError
from simpo.loading.policy_source import load_policy
from simpo.runs.resume import CheckpointInfo, check_strategy
from simpo.runs.run_dir import plan_run_dir
from tests.simpo.test_io_writer import dead_pid


def test_ckpt_path_last_finds_a_checkpoint_a_killed_swap_moved_aside(tmp_path):
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / f".last.ckpt.old-{io._host()}-{dead_pid()}-00aa").mkdir()  # killed between the two renames
    plan = plan_run_dir(tmp_path / "run", "last")
    assert plan.ckpt_path == str(checkpoints / "last.ckpt") and (checkpoints / "last.ckpt").is_dir()


def test_a_sharded_checkpoint_needs_strategy_fsdp(tmp_path):
    info = CheckpointInfo(tmp_path, global_step=2, epochs_completed=0, epoch_exhausted=False)
    with pytest.raises(CheckpointError, match=r"is a sharded \(FSDP\) checkpoint directory: resume it with strategy"):
        check_strategy(info, sharded=False)
    check_strategy(info, sharded=True)
    check_strategy(CheckpointInfo(tmp_path / "last.ckpt", 2, 0, False), sharded=False)


def test_a_model_directory_without_tokenizer_files_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(MissingFileError, match=r"model\.name_or_path=.* holds no tokenizer files"):
        load_policy(str(tmp_path), None)
