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
