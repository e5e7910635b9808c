"""Bootstrap confidence intervals over queries, and a paired comparison of two systems.

Pure standard library. Resampling is over queries (the unit a retrieval figure averages), with
a seeded ``random.Random`` so a run gives the same intervals twice.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Interval", "PairedComparison", "bootstrap_mean", "paired_bootstrap"]

TIE = 1e-9


@dataclass(frozen=True, slots=True)
class Interval:
    """A mean and its percentile-bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    level: float = 0.95

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True, slots=True)
class PairedComparison:
    """System B minus system A over the same queries."""

    difference: Interval
    wins: int
    """Queries where B scores higher than A."""
    losses: int
    ties: int
    p_value: float
    """Two-sided bootstrap p-value of "no difference" (share of resamples crossing zero, x2)."""

    @property
    def significant(self) -> bool:
        """Whether the confidence interval of the difference excludes zero."""
        return self.difference.low > 0 or self.difference.high < 0

    @property
    def direction(self) -> str:
        """``"better"``, ``"worse"`` or ``"no significant difference"``."""
        if self.difference.low > 0:
            return "better"
        if self.difference.high < 0:
            return "worse"
        return "no significant difference"


def _resamples(n: int, rounds: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(n) for _ in range(n)] for _ in range(rounds)]


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    # Linear interpolation between closest ranks (numpy's default "linear" method).
    pos = (len(sorted_values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _interval(values: Sequence[float], means: list[float], level: float) -> Interval:
    means.sort()
    tail = (1 - level) / 2
    mean = math.fsum(values) / len(values)
    return Interval(mean, _percentile(means, tail), _percentile(means, 1 - tail), level)


def bootstrap_mean(
    values: Sequence[float], *, rounds: int = 2000, level: float = 0.95, seed: int = 0
) -> Interval:
    """The mean of ``values`` with its percentile bootstrap interval."""
    if not values:
        raise ValueError("bootstrap of no values")
    means = [
        math.fsum(values[i] for i in idx) / len(values)
        for idx in _resamples(len(values), rounds, seed)
    ]
    return _interval(values, means, level)


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    rounds: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
    """Compare per-query scores ``b`` with ``a`` (same queries, same order): b - a."""
    if len(a) != len(b):
        raise ValueError(f"paired scores differ in length: {len(a)} and {len(b)}")
    if not a:
        raise ValueError("bootstrap of no values")
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    means = [
        math.fsum(diffs[i] for i in idx) / len(diffs)
        for idx in _resamples(len(diffs), rounds, seed)
    ]
    interval = _interval(diffs, list(means), level)
    below = sum(m <= 0 for m in means) / rounds
    above = sum(m >= 0 for m in means) / rounds
    p_value = min(1.0, 2 * min(below, above))
    wins = sum(d > TIE for d in diffs)
    losses = sum(d < -TIE for d in diffs)
    return PairedComparison(interval, wins, losses, len(diffs) - wins - losses, p_value)
