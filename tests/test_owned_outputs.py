"""Outputs outside the run directory are owned as the run directory is: checked before any work, recognised by the
owner file the project writes, never replacing files it did not write, and locked while a run uses them."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from callbacks.preemption import PreemptionCheckpoint
from simpo.errors import UserError
from simpo.io import read_torch_file
from simpo.runs.lock import RunDirInUseError
from simpo.runs.outputs import OWNER_FILE
from simpo.runs.run_dir import RunDirError
from tests.conftest import TINY_OVERRIDES, compose_train
from tests.simpo.test_run_lock import hold
from train import prepare, run_and_record

SHORT = [*TINY_OVERRIDES, "trainer.max_steps=2", "trainer.limit_val_batches=2", "trainer.val_check_interval=2",
         "callbacks.model_checkpoint.every_n_train_steps=2"]  # fmt: skip
EXPORT = "callbacks.hf_export.dirpath"


def files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def a_model_folder(path: Path) -> Path:
    """What a user keeps of a downloaded model: weights, config and notes (no owner file)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "llama"}')
    (path / "model.safetensors").write_bytes(b"precious weights")
    (path / "NOTES.md").write_text("where this model came from")
    return path


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_export_into_a_folder_the_project_did_not_write_is_refused_before_training(tmp_path, overwrite):
    folder = a_model_folder(tmp_path / "models" / "llama")
    before = files(tmp_path / "models")
    run_dir = tmp_path / "run"
    with pytest.raises(
        RunDirError,
        match=rf"{EXPORT}=.*llama holds files this project did not write "
        r"\(NOTES.md, config.json, model.safetensors; no \.simpo-owner\.json\)",
    ):
        run_and_record(compose_train(run_dir, [*SHORT, f"{EXPORT}={folder}", f"overwrite={str(overwrite).lower()}"]))
    assert files(tmp_path / "models") == before  # nothing replaced, nothing added (the lock left no file)
    assert not run_dir.exists() or not any(run_dir.iterdir())


def test_another_runs_export_is_replaced_only_with_overwrite_and_a_resume_replaces_its_own(tmp_path):
    export = tmp_path / "exports" / "latest"
    first = tmp_path / "first"
    run_and_record(compose_train(first, [*SHORT, f"{EXPORT}={export}"]))
    owner = json.loads((export / OWNER_FILE).read_text())
    assert owner == {"run_dir": str(first.resolve())} and (export / "model.safetensors").is_file()
    weights = (export / "model.safetensors").read_bytes()
    second = tmp_path / "second"
    with pytest.raises(
        RunDirError,
        match=rf"{EXPORT}=.*latest holds the Hugging Face export of another run "
        rf"\({first.resolve()}\): give another directory, or .*overwrite=true",
    ):
        run_and_record(compose_train(second, [*SHORT, "seed=7", f"{EXPORT}={export}"]))
    assert (export / "model.safetensors").read_bytes() == weights and not second.exists()
    # the first run continued: its own export is replaced
    run_and_record(compose_train(first, [*SHORT, f"{EXPORT}={export}", "ckpt_path=last", "trainer.max_steps=3"]))
    assert (export / "model.safetensors").read_bytes() != weights
    run_and_record(compose_train(second, [*SHORT, "seed=7", f"{EXPORT}={export}", "overwrite=true"]))
    assert json.loads((export / OWNER_FILE).read_text()) == {"run_dir": str(second.resolve())}


def test_an_export_directory_in_use_by_a_live_run_is_refused_naming_the_key_and_the_holder(tmp_path):
    export = tmp_path / "exports" / "latest"
    holder = hold(export)
    try:
        with pytest.raises(RunDirInUseError, match=rf"{EXPORT}=.*latest is in use by process {holder.pid} "):
            run_and_record(compose_train(tmp_path / "run", [*SHORT, f"{EXPORT}={export}"]))
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


CKPT = "callbacks.model_checkpoint.dirpath"


def test_runs_sharing_a_checkpoint_directory_never_overwrite_each_other_and_last_is_found_there(tmp_path):
    shared = tmp_path / "scratch" / "ckpts"
    first = tmp_path / "first"
    run_and_record(compose_train(first, [*SHORT, f"{CKPT}={shared}"]))
    assert json.loads((shared / OWNER_FILE).read_text()) == {"run_dir": str(first.resolve())}
    assert not (first / "checkpoints").exists()
    saved = (shared / "last.ckpt").read_bytes()
    second = tmp_path / "second"
    with pytest.raises(RunDirError, match=rf"{CKPT}=.*ckpts holds the checkpoints of another run \({first.resolve()}"):
        run_and_record(compose_train(second, [*SHORT, f"{CKPT}={shared}"]))
    assert (shared / "last.ckpt").read_bytes() == saved and not second.exists()
    # ckpt_path=last finds the checkpoint where the run put it, and continues it
    run_and_record(compose_train(first, [*SHORT, f"{CKPT}={shared}", "ckpt_path=last", "trainer.max_steps=3"]))
    record = json.loads((first / "status.json").read_text())
    assert record["status"] == "completed" and record["resumed_from"] == str(shared / "last.ckpt")
    assert read_torch_file(shared / "last.ckpt")["global_step"] == 3
    # overwrite=true in a new run directory replaces the first run's checkpoints, not the files beside them
    (shared / "README.txt").write_text("scratch space")
    run_and_record(
        compose_train(
            second, [*SHORT, f"{CKPT}={shared}", "overwrite=true", "trainer.max_steps=1", "optimizer.warmup_ratio=0"]
        )
    )
    assert read_torch_file(shared / "last.ckpt")["global_step"] == 1
    assert sorted(p.name for p in shared.iterdir()) == [OWNER_FILE, "README.txt", "last.ckpt"]  # step000002.ckpt gone


def test_a_preemption_directory_other_than_the_checkpoint_directory_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"callbacks.preemption.dirpath=.*elsewhere differs from the checkpoint dir"):
        run_and_record(compose_train(tmp_path / "run", [*SHORT, f"callbacks.preemption.dirpath={tmp_path}/elsewhere"]))
    assert not (tmp_path / "run").exists()


def test_the_preemption_checkpoint_goes_where_the_checkpoints_go(tmp_path):
    run = prepare(compose_train(tmp_path / "run", [*SHORT, f"{CKPT}={tmp_path / 'ckpts'}"]))
    preemption = next(c for c in run.trainer.callbacks if isinstance(c, PreemptionCheckpoint))
    try:
        preemption.on_train_start(run.trainer, run.module)
    finally:
        preemption._restore()
    assert preemption.dirpath == tmp_path / "ckpts" and preemption.run_dir == tmp_path / "run"
