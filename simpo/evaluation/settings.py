"""The keys of ``conf/evaluate.yaml`` checked before anything is loaded, run or written: each error names its key.

Where the models come from (``model.name_or_path``, ``ckpt_path``, ``judge.reward_model``) is checked as they load,
and the prompt rows as they are read, still before any task runs.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from simpo.core.chunked_logprobs import check_chunk_size
from simpo.core.device import resolve_device
from simpo.core.value_checks import check_number, check_one_of, check_positive_int, check_seed, is_integer
from simpo.errors import ConfigError, MissingFileError, UserError
from simpo.evaluation.generation import BACKENDS
from simpo.evaluation.prompt_sets import FORMATS
from simpo.models.policy import resolve_dtype

TASKS = ("preference", "generate", "judge")
def validate_settings(cfg: DictConfig) -> None:
    """Check every evaluate key whose value alone can be wrong, and the keys each task in ``cfg.tasks`` needs.

    Raises:
        ValueError: a value of the wrong type or out of range, an unknown task or device, ``device=cuda`` without
            a GPU, or a key a task needs left unset; the message names the key.
        FileNotFoundError: ``training_logs`` that is not a file.
    """
    tasks = _check_tasks(cfg.tasks)
    if not isinstance(cfg.get("overwrite", False), bool):
        raise UserError(f"overwrite must be true or false, not {cfg.overwrite!r}")
    check_seed("seed", cfg.seed)
    if cfg.ckpt_path is not None and not isinstance(cfg.ckpt_path, str):  # Hydra passes ckpt_path=1 as an integer
        raise ConfigError(f"ckpt_path must be the path of a train.py checkpoint (.ckpt) or null, not {cfg.ckpt_path!r}")
    resolve_device(cfg.device)
    resolve_dtype(cfg.model.dtype)
    check_chunk_size(cfg.model.chunk_size)
    check_positive_int("preference.max_pairs", cfg.preference.max_pairs, nullable=True)
    _check_buckets(cfg.preference.length_buckets)
    g = cfg.generate
    check_one_of("generate.format", g.format, ("auto", *FORMATS))
    check_one_of("generate.backend", g.backend, BACKENDS)
    check_positive_int("generate.batch_size", g.batch_size)
    check_positive_int("generate.limit", g.limit, nullable=True)
    check_positive_int("generate.max_new_tokens", g.max_new_tokens, nullable=True)
    check_number("generate.temperature", g.temperature, "a number >= 0 (0: greedy)", lambda x: x >= 0, nullable=True)
    check_number("generate.top_p", g.top_p, "a number in (0, 1]", lambda x: 0 < x <= 1, nullable=True)
    check_number("judge.length_tolerance", cfg.judge.length_tolerance, "a number in [0, 1]", lambda x: 0 <= x <= 1)
    if "generate" in tasks and g.prompts is None:
        raise UserError("the generate task needs generate.prompts (a .json/.jsonl file or a hub id)")
    j = cfg.judge
    no_outputs = j.outputs is None and "generate" not in tasks
    if "judge" in tasks and (j.reward_model is None or j.baseline is None or no_outputs):
        raise UserError("the judge task needs judge.reward_model, judge.baseline and judge.outputs (or tasks=generate)")
    if cfg.training_logs is not None and not Path(cfg.training_logs).expanduser().is_file():
        raise MissingFileError(f"training_logs={cfg.training_logs}: no such file; give a training run's metrics.csv")


def _check_tasks(tasks: Any) -> list[str]:
    if isinstance(tasks, str) or not isinstance(tasks, Sequence) or not tasks:
        raise UserError(f"tasks must be a non-empty list of {list(TASKS)}, e.g. tasks=[preference]; got {tasks!r}")
    unknown = sorted({str(task) for task in tasks} - set(TASKS))
    if unknown:
        raise UserError(f"tasks: unknown tasks {unknown}: choose from {list(TASKS)}")
    return list(tasks)


def _check_buckets(buckets: Any) -> None:
    ok = isinstance(buckets, Sequence) and not isinstance(buckets, str)
    ok = ok and all(is_integer(b) and b > 0 for b in buckets)
    if not ok or any(lo >= hi for lo, hi in itertools.pairwise(buckets)):
        raise UserError(
            "preference.length_buckets must be a list of increasing positive integers (token counts), "
            f"e.g. [64, 128, 256]; got {buckets!r}"
        )
