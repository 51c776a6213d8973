"""Shards: the sorted prompts cut into groups of ``shards.size``, each stage's output written one shard per file.

A shard file is written to a temporary name and renamed into place, so it either holds the whole shard or does not
exist: a run that crashes, is stopped (SIGINT, SIGTERM: ``stop.py``) or killed (SIGKILL) loses at most the shards
in progress, and a rerun skips every shard whose file exists. Processes split the shards round-robin by rank
(``RANK`` / ``WORLD_SIZE``, as torchrun sets them): shard ``i`` belongs to rank ``i % world``, so no prompt is done
twice or left out.
``manifest.json`` records the settings the shards were made with; a rerun with other settings is refused rather
than mixing shards of two runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simpo.errors import UserError
from simpo.io import remove_stale_temporaries, write_json, write_text
from simpo.sampling.stop import deferred

MANIFEST = "manifest.json"


def write_json_atomic(path: Path, value: Any) -> None:
    """``simpo.io.write_json`` (never half a file) with a stop signal waiting for the rename."""
    with deferred():
        write_json(path, value, indent=None, ensure_ascii=False)


def write_text_atomic(path: Path, text: str) -> None:
    """``simpo.io.write_text`` with a stop signal waiting for the rename."""
    with deferred():
        write_text(path, text)


def process_rank() -> tuple[int, int]:
    """(rank, world size) of this process from ``RANK`` / ``WORLD_SIZE`` (torchrun, SLURM wrappers); (0, 1) alone.

    Raises:
        ValueError: values that are not integers with 0 <= rank < world.
    """
    try:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as error:
        raise UserError(f"the environment's RANK / WORLD_SIZE must be integers ({error})") from None
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"the environment's RANK={rank} must be in [0, WORLD_SIZE={world})")
    return rank, world


@dataclass(frozen=True)
class ShardPlan:
    """Which prompts form which shard, and which shards this process does.

    Attributes:
        num_prompts: prompts in all (sorted by prompt id).
        size: prompts per shard.
        rank, world: this process and how many share the work.
    """

    num_prompts: int
    size: int
    rank: int = 0
    world: int = 1

    @property
    def num_shards(self) -> int:
        return -(-self.num_prompts // self.size)

    def bounds(self, shard: int) -> tuple[int, int]:
        """[start, end) prompt indices of ``shard``."""
        return shard * self.size, min((shard + 1) * self.size, self.num_prompts)

    def mine(self) -> list[int]:
        """The shards of this rank, in order."""
        return list(range(self.rank, self.num_shards, self.world))


class ShardStore:
    """The shard files of one stage: ``<output_dir>/<stage>/shard-00000.json``, each ``{"stats": ..., "rows": ...}``."""

    def __init__(self, output_dir: Path, stage: str) -> None:
        self.directory = Path(output_dir) / stage
        self.stage = stage

    def path(self, shard: int) -> Path:
        return self.directory / f"shard-{shard:05d}.json"

    def done(self, shard: int) -> bool:
        return self.path(shard).is_file()

    def write(self, shard: int, rows: list[dict[str, Any]], stats: Mapping[str, float]) -> None:
        """Write one whole shard atomically."""
        write_json_atomic(self.path(shard), {"stats": dict(stats), "rows": rows})

    def read(self, shard: int) -> dict[str, Any]:
        """``{"stats": {...}, "rows": [...]}`` of a finished shard."""
        with self.path(shard).open() as handle:
            return json.load(handle)

    def missing(self, shards: list[int]) -> list[int]:
        return [shard for shard in shards if not self.done(shard)]

    def read_all(self, plan: ShardPlan) -> Iterator[dict[str, Any]]:
        """Every shard of the plan (all ranks), in order."""
        for shard in range(plan.num_shards):
            yield self.read(shard)

    def remove_stale_temporaries(self) -> None:
        """Drop the temporary files a killed process of this host left behind (never a finished shard)."""
        remove_stale_temporaries(self.directory)


# What sample.py writes at the top of output_dir; with its manifest they are its own, without it someone else's.
OUTPUTS = ("train_prefs.jsonl", "test_prefs.jsonl", "report.json", "report.png", "generate", "score")


def check_output_dir_owned(output_dir: Path) -> None:
    """Refuse an ``output_dir`` that holds files named like sample.py's outputs but no manifest of an earlier
    sample.py run there: they are someone else's (a data set, another tool's report), and would be replaced.

    Raises:
        UserError: naming ``output_dir`` and the files, and the ways out.
    """
    directory = Path(output_dir)
    if (directory / MANIFEST).is_file():
        return
    found = [name for name in OUTPUTS if (directory / name).exists()]
    if found:
        raise UserError(
            f"output_dir={output_dir} holds {', '.join(found)}, which sample.py did not write (there is no {MANIFEST} "
            "of an earlier sample.py run): they would be replaced. Give another output_dir, or move them away"
        )


def check_manifest(output_dir: Path, sections: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The manifest ``output_dir`` will hold: the recorded sections, checked against this run's ``sections``.

    Args:
        sections: per stage (``prompts``, ``generate``, ``score``), the settings its shards depend on.

    Returns:
        the recorded manifest updated with this run's sections (write it with ``write_json_atomic``).

    Raises:
        ValueError: a recorded section differs from this run's (names ``output_dir``, the keys, both values and
            what to do): the shards on disk were made with other settings.
    """
    path = Path(output_dir) / MANIFEST
    recorded: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    for section, settings in sections.items():
        before = recorded.get(section)
        if before is None:
            continue
        changed = {k: (before.get(k), v) for k, v in settings.items() if before.get(k) != v}
        if changed:
            listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in sorted(changed.items()))
            remedy = (
                f"delete {Path(output_dir) / section} (and the later stages' folders) to redo that stage"
                if section != "prompts"
                else "the prompts changed, so every stage must be redone"
            )
            raise UserError(
                f"output_dir={output_dir} holds {section} shards made with other settings ({listed}): resuming would "
                f"mix two runs. Give another output_dir, or {remedy}"
            )
    return {**recorded, **{k: dict(v) for k, v in sections.items()}}
