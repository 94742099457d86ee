"""The value that ranks a sweep's points: a metric's final value, or the run's objective."""

from __future__ import annotations

import math
from pathlib import Path

from core import accounting


def rank_value(path: Path, acc: accounting.RunAccount, key: str | None) -> float | None:
    """The final value of ``key`` (mean of the last iterations) in the run at ``path``; its objective without a key."""
    if key is None:
        return acc.objective
    return accounting.final_value(accounting.counted_metrics(accounting.read_metrics(path)), key)


def sort_value(value: float | None, lowest_first: bool) -> float:
    """A sort key that puts the best value first and missing values last."""
    if value is None or math.isnan(value):
        return math.inf
    return value if lowest_first else -value
