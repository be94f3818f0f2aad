"""Summary statistics for results: mean with a 95% confidence interval."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class MeanCI:
    """Mean of a sample and the half-width of its 95% confidence interval (Student t)."""

    mean: float
    ci95: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.ci95:.4f}"


def mean_ci95(values: Sequence[float]) -> MeanCI:
    """Mean ± 95% CI half-width, ``t_{0.975,n-1} · s / sqrt(n)`` (0 for n < 2)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci95 needs at least one value")
    mean = math.fsum(values) / n
    if n < 2:
        return MeanCI(mean, 0.0, n)
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    from scipy.stats import t

    half = float(t.ppf(0.975, n - 1)) * math.sqrt(var / n)
    return MeanCI(mean, half, n)


@dataclass(frozen=True)
class PairedDiff:
    """Mean paired difference ``a − b`` with its 95% CI half-width over ``n`` pairs."""

    mean: float
    ci95: float
    n: int

    @property
    def significant(self) -> bool:
        """True when the 95% CI excludes 0."""
        return abs(self.mean) > self.ci95 and self.n >= 2

    def __str__(self) -> str:
        return f"{self.mean:+.4f} ± {self.ci95:.4f}"


def paired_diff_ci95(a: Sequence[float], b: Sequence[float]) -> PairedDiff:
    """Mean of the paired differences ``a_i − b_i`` and its Student-t 95% CI half-width.

    The pairs must be the same tasks scored by two methods; the interval is the one-sample t
    interval of the differences, ``t_{0.975,n−1} · sd(d) / sqrt(n)``, which is narrower than
    comparing two independent intervals whenever the methods' per-task scores are correlated.

    Args:
        a: per-task scores of the first method.
        b: per-task scores of the second method, in the same task order.

    Returns:
        :class:`PairedDiff` (mean, ci95, n); ``significant`` tells whether the CI excludes 0.
    """
    if len(a) != len(b):
        raise ValueError(f"paired_diff_ci95 needs equal lengths, got {len(a)} and {len(b)}")
    d = mean_ci95([x - y for x, y in zip(a, b, strict=True)])
    return PairedDiff(d.mean, d.ci95, d.n)
