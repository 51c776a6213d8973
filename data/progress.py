"""Quiet internal steps: ``datasets`` shows a progress bar for each flatten, save and load, which says nothing
useful about preparing data; only the tokenisation bar (real progress on a big data set) stays."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import datasets


@contextmanager
def no_progress_bars() -> Iterator[None]:
    """Hide ``datasets`` progress bars inside the block; the previous setting comes back after it."""
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()
