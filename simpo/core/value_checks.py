"""Checks of single config values, shared by ``train.py``, ``evaluate.py`` and the data module: each names the key.

Hydra passes ``key=abc`` through as a string and ``key=true`` as a boolean; neither is a number here, and ``1.5``
or ``"8"`` is no count. Each ``check_*`` function returns the value or raises ``ConfigError`` (a ``ValueError``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from numbers import Integral, Real
from typing import Any

from simpo.errors import ConfigError


def is_integer(value: Any) -> bool:
    """An integer that is not a boolean."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite real number that is not a boolean."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _or_null(nullable: bool) -> str:
    return " or null" if nullable else ""


def check_positive_int(key: str, value: Any, *, nullable: bool = False) -> int | None:
    """``value`` if it is an integer >= 1 (or ``None`` when ``nullable``)."""
    if value is None and nullable:
        return None
    if not is_integer(value) or value < 1:
        raise ConfigError(f"{key} must be a positive integer{_or_null(nullable)}, not {value!r}")
    return int(value)


def check_non_negative_int(key: str, value: Any) -> int:
    """``value`` if it is an integer >= 0."""
    if not is_integer(value) or value < 0:
        raise ConfigError(f"{key} must be an integer >= 0, not {value!r}")
    return int(value)


def check_number(
    key: str, value: Any, what: str, within: Callable[[float], bool] = lambda _: True, *, nullable: bool = False
) -> float | None:
    """``value`` if it is a finite number for which ``within`` holds (``what`` describes the range in the error)."""
    if value is None and nullable:
        return None
    if not (is_number(value) and within(value)):
        raise ConfigError(f"{key} must be {what}{_or_null(nullable)}, not {value!r}")
    return float(value)


Rule = tuple[Callable[[Any], bool], str]  # (valid, expected): a key's rule, applied by check_rule and the config check


def check_rule(key: str, value: Any, rule: Rule) -> Any:
    """``value`` if ``rule`` accepts it; else ``UserError("<key> must be <expected>, not <value>")``, the one wording
    of a rule wherever its value arrives (the training config check words its ``ConfigError`` the same way)."""
    valid, expected = rule
    if not valid(value):
        raise ConfigError(f"{key} must be {expected}, not {value!r}")
    return value


SEED_RULE: Rule = (lambda v: is_integer(v) and 0 <= v < 2**32, "an integer in [0, 2**32) (numpy seeds take no other)")


def check_seed(key: str, value: Any) -> int:
    """``value`` if it is a seed every generator takes (Python, NumPy, torch, Lightning's ``seed_everything``)."""
    return int(check_rule(key, value, SEED_RULE))


def check_one_of(key: str, value: Any, choices: Collection[str]) -> Any:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{key} must be one of {list(choices)}, not {value!r}")
    return value
