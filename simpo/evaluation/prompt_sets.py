"""Prompt sets of the standard chat benchmarks, and the answer files their tools read back.

- AlpacaEval: rows with ``instruction``; answers go to ``model_outputs.json``, a JSON list of
  ``{instruction, output, generator}`` (plus ``dataset`` when the prompt had one).
- Arena-Hard (v0.1): ``question.jsonl`` rows ``{question_id, turns: [{content}]}``; answers go to
  ``model_answer/<name>.jsonl``: ``{question_id, answer_id, model_id, choices: [{index, turns: [{content,
  token_len}]}], tstamp}``.
- MT-Bench (FastChat): ``question.jsonl`` rows ``{question_id, category, turns: [str, str]}``; answers go to
  ``model_answer/<name>.jsonl``: ``{question_id, answer_id, model_id, choices: [{index, turns: [str, ...]}],
  tstamp}``.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import datasets

Format = Literal["alpaca_eval", "arena_hard", "mt_bench"]
FORMATS: tuple[str, ...] = ("alpaca_eval", "arena_hard", "mt_bench")


@dataclass
class Prompt:
    """One benchmark question: its user turns (asked one after another) and the row it came from."""

    key: str
    turns: list[str]
    category: str | None = None
    row: dict[str, Any] = field(default_factory=dict)


def load_rows(source: str, split: str = "train") -> list[dict[str, Any]]:
    """Rows of a local ``.jsonl`` / ``.json`` file or a hub data set."""
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        loaded = json.loads(path.read_text())
        return loaded if isinstance(loaded, list) else [loaded]
    if source.startswith((".", "/", "~")):
        raise FileNotFoundError(f"generate.prompts={source}: no such file")
    return list(datasets.load_dataset(source, split=split))


def detect_format(rows: list[dict[str, Any]]) -> Format:
    """``alpaca_eval`` (``instruction``), ``arena_hard`` (``turns`` of ``{content}``) or ``mt_bench``
    (``turns`` of strings); anything else is an error naming ``generate.format``."""
    first = rows[0] if rows else {}
    if "instruction" in first:
        return "alpaca_eval"
    turns = first.get("turns")
    if isinstance(turns, list) and turns and isinstance(turns[0], dict):
        return "arena_hard"
    if isinstance(turns, list) and turns and isinstance(turns[0], str):
        return "mt_bench"
    raise ValueError(
        f"cannot tell the prompt format from fields {sorted(first)}: set generate.format to one of {FORMATS}"
    )


def to_prompts(rows: list[dict[str, Any]], fmt: Format) -> list[Prompt]:
    """Questions of a prompt set in format ``fmt``."""
    if fmt == "alpaca_eval":
        return [Prompt(str(i), [row["instruction"]], None, row) for i, row in enumerate(rows)]
    if fmt == "arena_hard":
        return [Prompt(str(row["question_id"]), [t["content"] for t in row["turns"]], row.get("category"), row)
                for row in rows]  # fmt: skip
    return [Prompt(str(row["question_id"]), list(row["turns"]), row.get("category"), row) for row in rows]


def write_answers(
    prompts: list[Prompt], answers: list[list[str]], fmt: Format, name: str, out_dir: Path, token_lens: list[list[int]]
) -> Path:
    """Write the answers where the benchmark's tool reads them; returns the file written."""
    if fmt == "alpaca_eval":
        records = []
        for prompt, answer in zip(prompts, answers, strict=True):
            record = {"instruction": prompt.turns[0], "output": answer[0], "generator": name}
            if "dataset" in prompt.row:
                record["dataset"] = prompt.row["dataset"]
            records.append(record)
        path = out_dir / "model_outputs.json"
        path.write_text(json.dumps(records, indent=2, ensure_ascii=False))
        return path
    path = out_dir / "model_answer" / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for prompt, answer, lens in zip(prompts, answers, token_lens, strict=True):
            if fmt == "arena_hard":
                turns: list[Any] = [{"content": a, "token_len": n} for a, n in zip(answer, lens, strict=True)]
                question_id: Any = prompt.row["question_id"]
            else:
                turns, question_id = answer, prompt.row["question_id"]
            record = {"question_id": question_id, "answer_id": uuid.uuid4().hex, "model_id": name,
                      "choices": [{"index": 0, "turns": turns}], "tstamp": time.time()}  # fmt: skip
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def read_answers(path: str) -> dict[str, str]:
    """First-turn answers keyed by prompt: AlpacaEval's ``instruction`` or the answer file's ``question_id``."""
    rows = load_rows(path)
    if rows and "instruction" in rows[0]:
        return {row["instruction"]: row["output"] for row in rows}
    answers = {}
    for row in rows:
        first = row["choices"][0]["turns"][0]
        answers[str(row["question_id"])] = first["content"] if isinstance(first, dict) else first
    return answers
