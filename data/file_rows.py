"""Read the rows of one local data file (``.jsonl``, ``.json``, ``.parquet``) into a ``datasets.Dataset``.

Every line is accounted for. In JSON lines (``.jsonl``, or a ``.json`` file that is not one JSON array) a blank line
is skipped, and a line that is not valid JSON or not a JSON object is not a row: it is dropped with reason
``malformed_json`` and reported by its 1-based line number. Row indices (as ``data_report.json`` gives them for the
other drop reasons) count the rows read, from 0, so blank and malformed lines take no index. Bytes that are not
UTF-8 or a file with no rows stop with an error that names the file and the line. A line whose field has another
JSON type than most rows give it (``"chosen": "text"`` where the others hold message lists) is dropped with reason
``mixed_field_type`` and reported by its line number, like a malformed one (a ``.json`` array with such elements still
stops, naming them). A ``.json`` file whose first character is ``[`` is one array of row objects.

The parse is pyarrow's (multi-threaded: ~2 s for a 500 MB file of 60k UltraFeedback rows on 2 cores); only a file
it refuses is scanned line by line in Python (~5 s more) to find the bad lines. Nothing is written to the
``datasets`` cache. The data set's fingerprint is a hash of the file's bytes, so the tokenisation cache
(``data/cache.py``) depends on the content alone.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.json as paj
import pyarrow.parquet as pq

from simpo.errors import UserError

FILE_TYPES = (".jsonl", ".json", ".parquet")
BLOCK_SIZE = 1 << 20  # bytes per pyarrow parse block (a longer line takes the line scan)
MAX_BLOCK_SIZE = (1 << 31) - 1
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class FileRows:
    """The rows of one file.

    Attributes:
        rows: the rows read (malformed lines left out), fingerprinted by the file's content.
        malformed_lines: 1-based numbers of the lines dropped as ``malformed_json``.
        mixed_type_lines: 1-based numbers of the lines dropped as ``mixed_field_type``: a field of another JSON type
            than most rows give it (a string where the others hold message lists).
    """

    rows: datasets.Dataset
    malformed_lines: list[int] = field(default_factory=list)
    mixed_type_lines: list[int] = field(default_factory=list)


def read_file(path: Path, where: str) -> FileRows:
    """Read the rows of a local data file.

    Args:
        path: a ``.jsonl``, ``.json`` or ``.parquet`` file.
        where: what the file is, for messages (e.g. "split 'test_prefs' of data.dataset=prefs/").

    Raises:
        ValueError: an unsupported file type, a file with no rows, bytes that are not UTF-8 (names the line), an
            unreadable Parquet file, or a JSON field whose type changes between rows (names the lines).
    """
    suffix = path.suffix.lower()
    if suffix not in FILE_TYPES:
        raise UserError(f"{where}: {path} is an unsupported file type; use one of {list(FILE_TYPES)}")
    fingerprint = content_digest(path)
    mixed: list[int] = []
    if suffix == ".parquet":
        table, malformed = _read_parquet(path, where), []
    elif suffix == ".json" and _first_byte(path) == b"[":
        table, malformed = _read_json_array(path, where), []
    else:
        table, malformed, mixed = _read_json_lines(path, where)
    if table.num_rows == 0 and not malformed:
        raise UserError(
            f"{path} holds no rows (it is empty or holds only blank lines); it is {where}: point data.dataset at "
            "a file with rows"
        )
    return FileRows(datasets.Dataset(table, fingerprint=fingerprint), malformed, mixed)


def content_digest(path: Path) -> str:
    """A hash of the file's bytes (the rows' fingerprint)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 24):
            digest.update(chunk)
    return f"file-{digest.hexdigest()[:40]}"


def _not_utf8(path: Path, line: int, byte: int, where: str) -> str:
    return f"{path} line {line} is not valid UTF-8 (byte 0x{byte:02x}); it is {where}: save the file as UTF-8"


def _first_byte(path: Path) -> bytes:
    """The first byte that is not whitespace (or a UTF-8 byte order mark); ``b""`` for a blank file."""
    with path.open("rb") as handle:
        head = handle.read(1 << 16).removeprefix(BOM).lstrip()
    return head[:1]


def one_line(error: BaseException) -> str:
    """``Type: first line of the message`` of an exception."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def _read_parquet(path: Path, where: str) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        raise UserError(f"{path} is not a readable Parquet file ({one_line(error)}); it is {where}") from error


def _parse(data: bytes | Path, block_size: int) -> pa.Table:
    source = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    return paj.read_json(source, read_options=paj.ReadOptions(block_size=min(block_size, MAX_BLOCK_SIZE)))


def _read_json_lines(path: Path, where: str) -> tuple[pa.Table, list[int], list[int]]:
    """(table of the good rows, malformed line numbers, mixed-type line numbers): pyarrow first, a line scan only
    when it refuses."""
    try:
        table = _parse(path, BLOCK_SIZE)
        table.validate(full=True)  # the reader passes bytes that are not UTF-8 into strings; this finds them
        if table.num_rows:
            return table, [], []
    except (pa.ArrowException, ValueError):  # malformed lines, non-UTF-8 bytes, a long line: look closer
        pass
    good: list[bytes] = []
    good_numbers: list[int] = []
    malformed: list[int] = []
    for number, line in _decoded_lines(path, where):
        if not line.strip():
            continue
        if _is_object(line):
            good.append(line.strip().encode())
            good_numbers.append(number)
        else:
            malformed.append(number)
    if not good:
        return pa.table({}), malformed, []
    data = b"\n".join(good)
    try:
        # One block: pyarrow infers each column's type from every row (a column null in the first block and a
        # list later would fail across blocks).
        return _parse(data, len(data) + 1), malformed, []
    except (pa.ArrowException, ValueError) as error:
        conflict = error
    # Rows whose field has another JSON type than most rows give it are bad rows, dropped and counted like others.
    keep = _majority_typed(good)
    mixed = [number for number, ok in zip(good_numbers, keep, strict=True) if not ok]
    good_numbers = [number for number, ok in zip(good_numbers, keep, strict=True) if ok]
    good = [line for line, ok in zip(good, keep, strict=True) if ok]
    data = b"\n".join(good)
    try:
        return (_parse(data, len(data) + 1) if good else pa.table({})), malformed, mixed
    except (pa.ArrowException, ValueError) as error:  # a conflict below the top level: still named, still stops
        raise UserError(_type_conflict(path, where, "line", good_numbers, good, error)) from conflict


def _majority_typed(lines: list[bytes]) -> list[bool]:
    """For each row, whether every top-level field holds the JSON type most rows give that field (nulls agree with
    any type; a tie goes to the type seen first)."""
    rows = [json.loads(line) for line in lines]
    kinds: dict[str, Counter[str]] = {}
    for row in rows:
        for key, value in row.items():
            if value is not None:
                kinds.setdefault(key, Counter())[_kind(value)] += 1
    majority = {key: counts.most_common(1)[0][0] for key, counts in kinds.items()}
    return [all(v is None or _kind(v) == majority[k] for k, v in row.items()) for row in rows]


def _decoded_lines(path: Path, where: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of each line; a byte order mark at the start is skipped.

    Raises:
        ValueError: a line that is not UTF-8 (names the line).
    """
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield number, (raw.removeprefix(BOM) if number == 1 else raw).decode("utf-8")
            except UnicodeDecodeError as error:
                raise UserError(_not_utf8(path, number, raw[error.start], where)) from error


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _is_object(line: str) -> bool:
    """Whether ``line`` is one valid JSON object (``NaN`` / ``Infinity`` are not JSON)."""
    try:
        return isinstance(json.loads(line, parse_constant=_reject_constant), dict)
    except (ValueError, RecursionError):
        return False


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "list", dict: "object"}.get(type(value), type(value).__name__)


def _type_conflict(
    path: Path, where: str, unit: str, numbers: list[int], lines: list[bytes], error: BaseException
) -> str:
    """The message for rows pyarrow cannot put in one table: the first field whose type changes, and where.

    Args:
        unit: what ``numbers`` count (``line`` or ``element``).
        numbers: the line (or element) number of each of ``lines``.
        lines: the rows, one JSON object each.
        error: pyarrow's error, quoted when no field changes type at the top level.
    """
    first: dict[str, tuple[str, int]] = {}
    for number, line in zip(numbers, lines, strict=True):
        for key, value in json.loads(line).items():
            if value is None:
                continue
            kind = _kind(value)
            seen = first.setdefault(key, (kind, number))
            if seen[0] != kind:
                return (
                    f"{path} {unit} {number}: field {key!r} is a {kind}, but {unit} {seen[1]} gives it as a {seen[0]}; "
                    f"it is {where}: every row must give a field the same type (fix or remove one of those lines)"
                )
    return f"{path} cannot be read as one table of rows ({one_line(error)}); it is {where}"


def _read_json_array(path: Path, where: str) -> pa.Table:
    """The rows of a ``.json`` file holding one array of row objects."""
    raw = path.read_bytes().removeprefix(BOM)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(_not_utf8(path, raw.count(b"\n", 0, error.start) + 1, raw[error.start], where)) from error
    try:
        items = json.loads(text, parse_constant=_reject_constant)
    except ValueError as error:
        raise UserError(f"{path} is not valid JSON ({error}); it is {where}") from error
    not_objects = [i for i, item in enumerate(items) if not isinstance(item, dict)]
    if not_objects:
        raise UserError(
            f"{path}: {len(not_objects)} of the {len(items)} elements of its JSON array are not row objects "
            f"(elements {not_objects[:5]}, counted from 0); it is {where}: every element must be one row object"
        )
    if not items:
        return pa.table({})
    lines = [json.dumps(item).encode() for item in items]
    data = b"\n".join(lines)
    try:
        return _parse(data, len(data) + 1)
    except (pa.ArrowException, ValueError) as error:
        raise UserError(_type_conflict(path, where, "element", list(range(len(items))), lines, error)) from error
