"""Checks of ``data.<key>`` values, so a bad setting stops at once with a message that names the key and the value.

Each function takes the key's name (without ``data.``) and its value, and returns the value or raises
``ValueError``. Booleans are not integers here (``true`` is no batch size), and ``1.5`` or ``"8"`` is no count.
"""

from __future__ import annotations

from collections.abc import Collection
from numbers import Integral, Real
from typing import Any


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def positive_int(key: str, value: Any, *, nullable: bool = False) -> int | None:
    """``value`` if it is an integer >= 1 (or ``None`` when ``nullable``)."""
    if value is None and nullable:
        return None
    if not _is_int(value) or value < 1:
        raise ValueError(f"data.{key} must be a positive integer{' or null' if nullable else ''}, not {value!r}")
    return int(value)


def non_negative_int(key: str, value: Any) -> int:
    """``value`` if it is an integer >= 0."""
    if not _is_int(value) or value < 0:
        raise ValueError(f"data.{key} must be an integer >= 0, not {value!r}")
    return int(value)


def unit_fraction(key: str, value: Any) -> float:
    """``value`` if it is a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value <= 1:
        raise ValueError(f"data.{key} must be a number in [0, 1], not {value!r}")
    return float(value)


def one_of(key: str, value: Any, choices: Collection[str]) -> str:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"data.{key} must be one of {list(choices)}, not {value!r}")
    return value


def val_size(value: Any) -> float | int | None:
    """``data.val_size``: ``None``, a fraction in (0, 1), or a positive row count."""
    if value is None:
        return None
    fraction = isinstance(value, float) and 0 < value < 1
    if not (fraction or (_is_int(value) and value >= 1)):
        raise ValueError(
            f"data.val_size must be a fraction in (0, 1) (e.g. 0.05) or a positive row count (e.g. 500), not {value!r}"
        )
    return value
