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

from simpo.errors import MissingFileError, UserError
from simpo.io import atomic_file, write_json

Format = Literal["alpaca_eval", "arena_hard", "mt_bench"]
FORMATS: tuple[str, ...] = ("alpaca_eval", "arena_hard", "mt_bench")


@dataclass
class Prompt:
    """One benchmark question: its user turns (asked one after another) and the row it came from."""

    key: str
    turns: list[str]
    category: str | None = None
    row: dict[str, Any] = field(default_factory=dict)


# What each format needs in every row, for error messages.
FORMAT_FIELDS = {
    "alpaca_eval": "'instruction' (a string)",
    "arena_hard": "'question_id' and 'turns' (a non-empty list of {'content': string})",
    "mt_bench": "'question_id' and 'turns' (a non-empty list of strings)",
}


def load_rows(source: str, split: str = "train", key: str = "generate.prompts") -> list[dict[str, Any]]:
    """Rows of a local ``.jsonl`` / ``.json`` file or a hub data set; ``key`` (the config key of ``source``)
    is named in errors.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: a local file that is not valid JSON / JSON lines.
    """
    path = Path(source).expanduser()
    if path.is_file():
        text = path.read_text()
        try:
            if path.suffix == ".jsonl":
                return [json.loads(line) for line in text.splitlines() if line.strip()]
            loaded = json.loads(text)
        except json.JSONDecodeError as error:
            raise UserError(f"{key}={source}: not valid {path.suffix.lstrip('.') or 'JSON'}: {error}") from None
        return loaded if isinstance(loaded, list) else [loaded]
    if source.startswith((".", "/", "~")) or path.suffix in (".json", ".jsonl"):
        raise MissingFileError(f"{key}={source}: no such file")
    return list(datasets.load_dataset(source, split=split))


def _needs() -> str:
    return "; ".join(f"{name} needs {fields}" for name, fields in FORMAT_FIELDS.items())


def detect_format(rows: list[dict[str, Any]], source: str | None = None) -> Format:
    """``alpaca_eval`` (``instruction``), ``arena_hard`` (``turns`` of ``{content}``) or ``mt_bench``
    (``turns`` of strings), from the first row; anything else is an error naming ``generate.format`` and
    what each format needs (``source``, the prompt set, is named too when given)."""
    first = rows[0] if rows else {}
    if isinstance(first, dict):
        if "instruction" in first:
            return "alpaca_eval"
        turns = first.get("turns")
        if isinstance(turns, list) and turns and isinstance(turns[0], dict):
            return "arena_hard"
        if isinstance(turns, list) and turns and isinstance(turns[0], str):
            return "mt_bench"
    where = f"generate.prompts={source}" if source is not None else "the prompt set"
    fields = sorted(first) if isinstance(first, dict) else f"a {type(first).__name__}, not an object"
    raise UserError(
        f"generate.format=auto cannot tell the format of {where} from its row 1 (fields {fields}): "
        f"{_needs()}. Fix the rows or set generate.format to one of {FORMATS}"
    )


def row_problem(row: Any, fmt: Format) -> str | None:
    """What keeps ``row`` from being a question of format ``fmt`` (``None`` when nothing does)."""
    if not isinstance(row, dict):
        return f"is a {type(row).__name__}, not an object"
    if fmt == "alpaca_eval":
        if "instruction" not in row:
            return "has no field 'instruction'"
        return None if isinstance(row["instruction"], str) else "has an 'instruction' that is not a string"
    if "question_id" not in row:
        return "has no field 'question_id'"
    turns = row.get("turns")
    if "turns" not in row:
        return "has no field 'turns'"
    if not isinstance(turns, list) or not turns:
        return "has 'turns' that is not a non-empty list"
    if fmt == "arena_hard" and not all(isinstance(t, dict) and isinstance(t.get("content"), str) for t in turns):
        return "has a turn that is not {'content': string}"
    if fmt == "mt_bench" and not all(isinstance(t, str) for t in turns):
        return "has a turn that is not a string"
    return None


def load_prompts(source: str, split: str, fmt: str) -> tuple[Format, list[Prompt]]:
    """The questions of ``generate.prompts``, every row checked before any is used.

    Args:
        source: a ``.json`` / ``.jsonl`` file or a hub id; split: the hub split.
        fmt: ``auto`` (detected from the first row) or one of ``FORMATS``.

    Returns:
        (the format, the questions in file order).

    Raises:
        ValueError: an empty prompt set, an undetectable format, or a row that lacks a field the format needs
            (the message names generate.format, generate.prompts, the field and the first such row, from 1).
    """
    rows = load_rows(source, split)
    if not rows:
        raise UserError(f"generate.prompts={source}: the prompt set has no rows")
    found: Format = detect_format(rows, source) if fmt == "auto" else fmt  # type: ignore[assignment]
    for number, row in enumerate(rows, start=1):
        problem = row_problem(row, found)
        if problem is not None:
            how = f"auto (detected {found} from row 1)" if fmt == "auto" else found
            raise UserError(
                f"generate.prompts={source}: row {number} (counting from 1) {problem}, which "
                f"generate.format={how} needs: every row needs {FORMAT_FIELDS[found]}"
            )
    return found, to_prompts(rows, found)


def to_prompts(rows: list[dict[str, Any]], fmt: Format) -> list[Prompt]:
    """Questions of a prompt set in format ``fmt`` (rows checked by ``load_prompts``)."""
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
        write_json(path, records, ensure_ascii=False)
        return path
    path = out_dir / "model_answer" / f"{name}.jsonl"
    with atomic_file(path) as handle:
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


def read_answers(path: str, key: str) -> dict[str, str]:
    """First-turn answers keyed by prompt: AlpacaEval's ``instruction`` or the answer file's ``question_id``;
    ``key`` (``judge.outputs`` or ``judge.baseline``) is named in errors.

    Raises:
        ValueError: an empty file, or a row that is neither ``{instruction, output}`` nor an answer-file record.
    """
    rows = load_rows(path, key=key)
    if not rows:
        raise UserError(f"{key}={path}: the answer file has no rows")
    alpaca = isinstance(rows[0], dict) and "instruction" in rows[0]
    answers = {}
    for number, row in enumerate(rows, start=1):
        try:
            if alpaca:
                answers[row["instruction"]] = row["output"]
            else:
                first = row["choices"][0]["turns"][0]
                answers[str(row["question_id"])] = first["content"] if isinstance(first, dict) else first
        except (KeyError, IndexError, TypeError):
            shape = "{instruction, output} (AlpacaEval)" if alpaca else "{question_id, choices: [{turns}]}"
            raise UserError(
                f"{key}={path}: row {number} (counting from 1) is not an answer of the form {shape}"
            ) from None
    return answers
