"""Confidence intervals for per-case metrics, shared by every task's ``evaluate``.

The percentile bootstrap over cases (resampling patients/volumes, never slices of one case, so
the interval reflects the between-case variability a reader cares about), seeded so the same
command prints the same interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from medimg.errors import InputError


@dataclass(frozen=True)
class Estimate:
    """A statistic over cases with its bootstrap confidence interval."""

    value: float
    low: float
    high: float
    n: int
    level: float = 0.95

    def __str__(self) -> str:
        return f"{self.value:.4g} [{self.low:.4g}, {self.high:.4g}]"


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    *,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """Percentile-bootstrap interval of ``statistic`` over per-case ``values``.

    NaN values (e.g. a distance undefined for an empty prediction) are rejected: decide their
    convention before aggregating. With one case the interval is the value itself.

    >>> est = bootstrap_ci([0.8, 0.9, 0.85, 0.95], seed=0)
    >>> round(est.value, 3), est.low <= est.value <= est.high
    (0.875, True)
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise InputError("bootstrap_ci needs at least one value")
    if not np.all(np.isfinite(x)):
        raise InputError(
            "bootstrap_ci got NaN/Inf values; apply the metric's empty-case convention first"
        )
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), got {level}")
    value = float(statistic(x))
    if x.size == 1:
        return Estimate(value, value, value, 1, level)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_resamples, x.size))
    stats = np.array([statistic(x[i]) for i in idx], dtype=np.float64)
    alpha = (1 - level) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return Estimate(value, float(low), float(high), int(x.size), level)
