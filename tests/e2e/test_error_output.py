"""What a failed command prints (real processes): an error the user can fix is one line naming the key; an error
raised inside a library keeps its traceback, so a library's failure never reads as the user's mistake."""

from __future__ import annotations

import json

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
