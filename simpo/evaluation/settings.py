"""The keys of ``conf/evaluate.yaml`` checked before anything is loaded, run or written: each error names its key.

Where the models come from (``model.name_or_path``, ``ckpt_path``, ``judge.reward_model``) is checked as they load,
and the prompt rows as they are read, still before any task runs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from simpo.evaluation.generation import BACKENDS
from simpo.evaluation.prompt_sets import FORMATS
from simpo.policy import resolve_dtype

TASKS = ("preference", "generate", "judge")
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> str:
    """``cuda`` or ``cpu`` for ``device`` (auto | cpu | cuda): auto is cuda when a GPU is visible."""
    return "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"


def validate_settings(cfg: DictConfig) -> None:
    """Check every evaluate key whose value alone can be wrong, and the keys each task in ``cfg.tasks`` needs.

    Raises:
        ValueError: a value of the wrong type or out of range, an unknown task or device, ``device=cuda`` without
            a GPU, or a key a task needs left unset; the message names the key.
        FileNotFoundError: ``training_logs`` that is not a file.
    """
    tasks = _check_tasks(cfg.tasks)
    _check_choice("device", cfg.device, DEVICES)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA GPU is available here: use device=auto or device=cpu")
    resolve_dtype(cfg.model.dtype)
    _check_int("model.chunk_size", cfg.model.chunk_size, optional=True)
    _check_int("preference.max_pairs", cfg.preference.max_pairs, optional=True)
    _check_buckets(cfg.preference.length_buckets)
    g = cfg.generate
    _check_choice("generate.format", g.format, ("auto", *FORMATS))
    _check_choice("generate.backend", g.backend, BACKENDS)
    _check_int("generate.batch_size", g.batch_size, optional=False)
    _check_int("generate.limit", g.limit, optional=True)
    _check_int("generate.max_new_tokens", g.max_new_tokens, optional=True)
    _check_number("generate.temperature", g.temperature, "a number >= 0 (0: greedy)", lambda x: x >= 0)
    _check_number("generate.top_p", g.top_p, "a number in (0, 1]", lambda x: 0 < x <= 1)
    _check_number("judge.length_tolerance", cfg.judge.length_tolerance, "a number in [0, 1]",
                  lambda x: 0 <= x <= 1, optional=False)  # fmt: skip
    if "generate" in tasks and g.prompts is None:
        raise ValueError("the generate task needs generate.prompts (a .json/.jsonl file or a hub id)")
    j = cfg.judge
    no_outputs = j.outputs is None and "generate" not in tasks
    if "judge" in tasks and (j.reward_model is None or j.baseline is None or no_outputs):
        raise ValueError(
            "the judge task needs judge.reward_model, judge.baseline and judge.outputs (or tasks=generate)"
        )
    if cfg.training_logs is not None and not Path(cfg.training_logs).expanduser().is_file():
        raise FileNotFoundError(f"training_logs={cfg.training_logs}: no such file; give a training run's metrics.csv")


def _check_tasks(tasks: Any) -> list[str]:
    if isinstance(tasks, str) or not isinstance(tasks, Sequence) or not tasks:
        raise ValueError(f"tasks must be a non-empty list of {list(TASKS)}, e.g. tasks=[preference]; got {tasks!r}")
    unknown = sorted({str(task) for task in tasks} - set(TASKS))
    if unknown:
        raise ValueError(f"tasks: unknown tasks {unknown}: choose from {list(TASKS)}")
    return list(tasks)


def _check_choice(key: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{key} must be one of {list(choices)}, not {value!r}")


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_int(key: str, value: Any, *, optional: bool) -> None:
    if value is None and optional:
        return
    if not _is_positive_int(value):
        raise ValueError(f"{key} must be a positive integer{' or null' if optional else ''}, not {value!r}")


def _check_number(key: str, value: Any, what: str, within: Callable[[float], bool], *, optional: bool = True) -> None:
    if value is None and optional:
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and within(value)):
        raise ValueError(f"{key} must be {what}{' or null' if optional else ''}, not {value!r}")


def _check_buckets(buckets: Any) -> None:
    ok = isinstance(buckets, Sequence) and not isinstance(buckets, str)
    ok = ok and all(_is_positive_int(b) for b in buckets)
    if not ok or any(lo >= hi for lo, hi in itertools.pairwise(buckets)):
        raise ValueError(
            "preference.length_buckets must be a list of increasing positive integers (token counts), "
            f"e.g. [64, 128, 256]; got {buckets!r}"
        )
