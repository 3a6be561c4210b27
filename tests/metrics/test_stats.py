"""Bootstrap CIs: coverage of a known mean, determinism, and refusals."""

from __future__ import annotations

import numpy as np
import pytest

from medimg.errors import InputError
from medimg.metrics.stats import bootstrap_ci


def test_interval_covers_true_mean_at_about_nominal_rate() -> None:
    rng = np.random.default_rng(0)
    hits = 0
    for trial in range(200):
        est = bootstrap_ci(rng.normal(5.0, 1.0, size=40), n_resamples=400, seed=trial)
        hits += est.low <= 5.0 <= est.high
    assert 0.88 <= hits / 200 <= 0.99  # nominal 0.95; percentile bootstrap is a bit narrow


def test_width_shrinks_with_more_cases_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    small, large = rng.normal(size=10), rng.normal(size=1000)
    w_small = bootstrap_ci(small).high - bootstrap_ci(small).low
    w_large = bootstrap_ci(large).high - bootstrap_ci(large).low
    assert w_large < w_small / 4
    assert bootstrap_ci(small, seed=3) == bootstrap_ci(small, seed=3)


def test_custom_statistic_and_single_case() -> None:
    est = bootstrap_ci([1.0, 2.0, 100.0], np.median)
    assert est.value == 2.0
    one = bootstrap_ci([0.7])
    assert (one.low, one.value, one.high) == (0.7, 0.7, 0.7)


@pytest.mark.parametrize("values", [[], [1.0, np.nan]])
def test_refuses_empty_or_nan(values) -> None:
    with pytest.raises(InputError):
        bootstrap_ci(values)
