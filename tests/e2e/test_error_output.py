"""What a failed command prints (real processes): an error the user can fix is one line naming the key; an error
raised inside a library keeps its traceback, so a library's failure never reads as the user's mistake."""

from __future__ import annotations

import json

import pytest

from simpo.config.config_checks import ConfigError
from simpo.errors import CheckpointError, MissingFileError, UserError
from simpo.reference.table import StaleReferenceError
from simpo.runs.run_dir import RunDirError
from simpo.runs.run_status import NoTrainingError, RunFailedError
from tests.e2e.test_checkpoint_files import run_command


def test_a_user_error_is_one_line_naming_the_key(tmp_path):
    out = run_command("train.py", f"hydra.run.dir={tmp_path / 'run'}", "optimizer.lr=-1", cwd=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode == 1 and "Traceback" not in text, text[-3000:]
    errors = [line for line in text.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "ConfigError: optimizer.lr must be" in errors[0], text[-3000:]


def test_a_value_error_raised_inside_a_library_keeps_its_traceback(tmp_path):
    """transformers refuses a model type it does not know with a ``ValueError``: not the project's message, so the
    traceback shows where it came from."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "not_a_model_type", "hidden_size": 8}))
    out = run_command("train.py", f"hydra.run.dir={tmp_path / 'run'}", "model=hf", f"model.name_or_path={model}",
                      "model.tokenizer=llama3", cwd=tmp_path)  # fmt: skip
    text = out.stdout + out.stderr
    assert out.returncode == 1, text[-3000:]
    assert "Traceback" in text and "transformers" in text, text[-3000:]
    assert "ValueError: The checkpoint you are trying to load has model type `not_a_model_type`" in text
    assert not (tmp_path / "run" / "status.json").exists()


def test_the_projects_errors_share_one_base():
    for kind in (ConfigError, CheckpointError, MissingFileError, RunDirError, RunFailedError, NoTrainingError,
                 StaleReferenceError):  # fmt: skip
        assert issubclass(kind, UserError) and issubclass(kind, ValueError), kind
    assert issubclass(MissingFileError, FileNotFoundError) and issubclass(RunFailedError, RuntimeError)


@pytest.mark.slow  # a real train.py run whose checkpoint save finds no room
def test_no_room_for_a_checkpoint_is_one_line_and_the_run_is_failed(tmp_path):
    """A file-size limit (what a full disk or a quota answers, as far as the writer can tell) during the checkpoint
    save: one line naming the file, status failed, no temporary left, the earlier files whole."""
    import os
    import subprocess
    import sys

    from tests.e2e.test_checkpoint_files import ROOT

    run_dir = tmp_path / "run"
    limited = ("import os, resource, runpy, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (20_000_000, 20_000_000)); "
               "sys.argv = sys.argv[1:]; sys.path.insert(0, os.path.dirname(sys.argv[0])); "
               "runpy.run_path(sys.argv[0], run_name='__main__')")  # fmt: skip
    args = [sys.executable, "-c", limited, str(ROOT / "train.py"), f"hydra.run.dir={run_dir}", "trainer.max_steps=2",
            "trainer.val_check_interval=2", "trainer.limit_val_batches=2"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    out = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 1 and "Traceback" not in text, text[-3000:]
    errors = [line for line in text.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "NoSpaceError: no room to write" in errors[0] and "last.ckpt" in errors[0], errors
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "no room to write" in status["error"]
    assert not [p for p in run_dir.rglob(".*") if ".tmp-" in p.name]
