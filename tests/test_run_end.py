"""The end of a run: the last step is checkpointed before the export, an export directory that cannot be written is
refused before training, and one that fails at the end leaves a resumable checkpoint and says which key to fix."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import lightning as L
import pytest

from simpo.errors import ExportError
from simpo.io import read_torch_file
from simpo.runs.run_dir import RunDirError
from tests.conftest import TINY_OVERRIDES, compose_train
from train import run_and_record

SHORT = [*TINY_OVERRIDES, "trainer.max_steps=3", "trainer.limit_val_batches=2", "trainer.val_check_interval=3",
         "callbacks.model_checkpoint.every_n_train_steps=2"]  # fmt: skip
TEMPORARY = re.compile(r"^\..+\.(tmp|old)-")


class BreakExportDirectory(L.Callback):
    """What a user's disk does mid-run: at ``step`` the export's parent directory becomes a file."""

    def __init__(self, parent: str, step: int) -> None:
        self.parent, self.step = Path(parent), step

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step and self.parent.is_dir():
            shutil.rmtree(self.parent)
            self.parent.write_text("in the way")


def test_the_last_step_is_checkpointed_even_between_periodic_saves(tmp_path):
    run_and_record(compose_train(tmp_path, SHORT))  # saves at step 2; training ends at 3
    assert read_torch_file(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 3
    assert (tmp_path / "hf" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("dirpath", "match"),
    [
        ("{tmp}/a_file/hf", r"callbacks\.hf_export\.dirpath=.*a_file/hf cannot be created: .*a_file is a file"),
        ("{tmp}/a_file", r"callbacks\.hf_export\.dirpath=.*a_file is a file, not a directory"),
        (".", r"callbacks\.hf_export\.dirpath=\. names no directory of its own"),
        ("/proc/no_such_dir/hf", r"callbacks\.hf_export\.dirpath=/proc/no_such_dir/hf cannot be written"),
    ],
)
def test_an_export_directory_that_cannot_be_written_is_refused_before_training(tmp_path, dirpath, match):
    (tmp_path / "a_file").write_text("a file")
    run_dir = tmp_path / "run"
    with pytest.raises(RunDirError, match=match):
        run_and_record(compose_train(run_dir, [*SHORT, f"callbacks.hf_export.dirpath={dirpath.format(tmp=tmp_path)}"]))
    assert not run_dir.exists() or not any(run_dir.iterdir())


def test_an_export_that_fails_at_the_end_leaves_a_resumable_checkpoint_and_names_the_key(tmp_path):
    run_dir, exports = tmp_path / "run", tmp_path / "exports"
    exports.mkdir()
    breaker = [f"+callbacks.breaker._target_={__name__}.BreakExportDirectory", f"+callbacks.breaker.parent={exports}",
               "+callbacks.breaker.step=2"]  # fmt: skip
    with pytest.raises(ExportError, match=r"callbacks\.hf_export\.dirpath=.*exports/hf: the export could not be "
                                          r"written \(.*\); the training is saved in the last checkpoint of step 3"):
        run_and_record(compose_train(run_dir, [*SHORT, f"callbacks.hf_export.dirpath={exports}/hf", *breaker]))
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "callbacks.hf_export.dirpath" in status["error"] and status["step"] == 3
    assert read_torch_file(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 3  # no training lost
    assert [p for p in tmp_path.rglob(".*") if TEMPORARY.match(p.name)] == []  # no temporary left anywhere
    exports.unlink()  # the user fixes the directory and continues the run
    run_and_record(compose_train(run_dir, [*SHORT, "ckpt_path=last", "trainer.max_steps=4",
                                           f"callbacks.hf_export.dirpath={exports}/hf"]))  # fmt: skip
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
    assert (exports / "hf" / "model.safetensors").is_file()


def test_an_unwritable_cache_or_a_negative_seed_is_refused_by_name_before_anything_is_written(tmp_path, monkeypatch):
    """A cache directory that cannot be written failed with a raw traceback, and only after the reference pass had
    been computed; ``seed=-1`` reported numpy's bounds instead of the key."""
    run_dir = tmp_path / "run"
    monkeypatch.setenv("SIMPO_CACHE", "/proc/no_such_cache")
    with pytest.raises(RunDirError, match=r"SIMPO_CACHE \(the cache of .*\)=/proc/no_such_cache cannot be written"):
        run_and_record(compose_train(run_dir, SHORT))
    monkeypatch.delenv("SIMPO_CACHE")
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*32\).*not -1"):
        run_and_record(compose_train(run_dir, [*SHORT, "seed=-1"]))
    assert not run_dir.exists() or not any(run_dir.iterdir())
