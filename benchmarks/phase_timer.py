"""Run ``train.py`` in this process with clock reads around its fixed-cost phases: issue 34's "fixed costs apart".

    python benchmarks/phase_timer.py OUT.json train.py [overrides ...]

``benchmarks/whole_process_vs_trl.py --phases`` launches our side this way. The script imports ``train`` (timing the
imports), wraps a few functions with two ``time.time()`` reads each (nothing else changes: the same objects, the same
calls, in the same order), sets ``sys.argv`` to what follows ``train.py`` and calls ``train.main()``, i.e. the
Hydra entry point as ``python train.py`` would. At exit it writes ``OUT.json``:

- ``imported``: when ``import train`` returned (Python, torch, Lightning, Transformers, Hydra, ...);
- ``calls``: ``{name: [[start, end], ...]}`` for ``prepare`` (checks, data, model, trainer), ``load_tokenizer``
  (``load_model_tokenizer``),
  ``prepare_data`` (read, tokenise or load from the cache) and ``load`` of the data module, ``build_module`` (policy,
  objective, reference), ``execute``, ``fit``, ``save_checkpoint`` (every checkpoint written) and ``export`` (the
  Hugging Face export);
- ``exit``: when the interpreter began to shut down (``atexit``).

Times are ``time.time()``; ``whole_process_vs_trl.py`` subtracts the launch time it took before starting the
process. The first and last step's ends come from ``benchmarks/process_probe.py`` (added to the command as usual).
"""

from __future__ import annotations

import atexit
import functools
import inspect
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def timed(calls: dict[str, list[list[float]]], name: str, function: Any) -> Any:
    """``function`` with its start and end time appended to ``calls[name]``."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        span = [time.time(), float("nan")]
        calls[name].append(span)
        try:
            return function(*args, **kwargs)
        finally:
            span[1] = time.time()

    return wrapper


def main() -> None:
    if len(sys.argv) < 3 or Path(sys.argv[2]).name != "train.py":
        raise SystemExit(__doc__)
    out = Path(sys.argv[1])
    record: dict[str, Any] = {"calls": defaultdict(list)}
    sys.path.insert(0, str(ROOT))
    import lightning as L

    import train
    from callbacks.hf_export import HFExport
    from data.datamodule import PreferenceDataModule

    record["imported"] = time.time()
    calls = record["calls"]
    for name in ("prepare", "build_module", "execute"):
        setattr(train, name, timed(calls, name, getattr(train, name)))
    train.load_model_tokenizer = timed(calls, "load_tokenizer", train.load_model_tokenizer)
    PreferenceDataModule.prepare_data = timed(calls, "prepare_data", PreferenceDataModule.prepare_data)
    PreferenceDataModule.load = timed(calls, "load", PreferenceDataModule.load)
    L.Trainer.fit = timed(calls, "fit", L.Trainer.fit)
    L.Trainer.save_checkpoint = timed(calls, "save_checkpoint", L.Trainer.save_checkpoint)
    HFExport._write = timed(calls, "export", HFExport._write)

    def write() -> None:
        record["exit"] = time.time()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1))

    atexit.register(write)
    sys.argv = [str(ROOT / "train.py"), *sys.argv[3:]]
    # Hydra finds conf/ beside the entry point's file only when that function's module is __main__, as it is under
    # `python train.py`; imported, it would look for a Python package named conf
    inspect.unwrap(train.main).__module__ = "__main__"
    train.main()


if __name__ == "__main__":
    main()
