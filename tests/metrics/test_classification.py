"""Classification metrics against their brute-force definitions."""

from __future__ import annotations

import numpy as np
import pytest

from medimg.errors import InputError
from medimg.metrics.classification import (
    auc_bootstrap_ci,
    auc_delong_ci,
    binary_metrics,
    expected_calibration_error,
    per_class_table,
    reliability_curve,
    roc_auc,
    roc_curve,
    threshold_for_sensitivity,
)


def _brute_auc(y, s):
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0) + 0.5 * (diff == 0)).mean()


def test_auc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(y * 0.8, 1.0), 1)  # rounding creates ties
    assert roc_auc(y, s) == pytest.approx(_brute_auc(y, s), abs=1e-12)


def test_roc_curve_trapezoid_equals_auc():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(y, 1.0), 1)
    fpr, tpr, thr = roc_curve(y, s)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1 and np.isinf(thr[0])
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(y, s), abs=1e-12)


def test_confidence_intervals_cover_and_shrink():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 400)
    s = rng.normal(y * 1.5, 1.0)
    d, b = auc_delong_ci(y, s), auc_bootstrap_ci(y, s, n_resamples=500)
    assert d.value == pytest.approx(roc_auc(y, s)) and b.value == pytest.approx(d.value)
    assert d.low < d.value < d.high and b.low < b.value < b.high
    assert abs((d.high - d.low) - (b.high - b.low)) < 0.03  # two methods, similar widths
    small = auc_delong_ci(y[:60], s[:60])
    assert small.high - small.low > d.high - d.low


def test_binary_metrics_counts():
    m = binary_metrics([1, 1, 1, 0, 0], [0.9, 0.6, 0.2, 0.7, 0.1], threshold=0.5)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 1)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(4 / 6) and m["accuracy"] == pytest.approx(0.6)
    assert threshold_for_sensitivity([1, 1, 0], [0.9, 0.3, 0.5], 1.0) == pytest.approx(0.3)


def test_ece_zero_for_calibrated_and_large_for_overconfident():
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 1, 20000)
    y = (rng.uniform(0, 1, p.size) < p).astype(int)
    assert expected_calibration_error(p, y) < 0.02
    over = np.where(p > 0.5, 0.999, 0.001)
    assert expected_calibration_error(over, y) > 0.2
    curve = reliability_curve(p, y, n_bins=5)
    assert curve["count"].sum() == p.size and len(curve["edges"]) == 6


def test_multiclass_table_and_errors():
    y = np.array([0, 1, 2, 2, 1, 0])
    p = np.eye(3)[y] * 0.8 + 0.2 / 3
    rows = per_class_table(y, p, "multiclass", ["a", "b", "c"])
    assert [r["auc"] for r in rows] == [1.0, 1.0, 1.0]
    assert expected_calibration_error(p, y) == pytest.approx(1 - p.max(axis=1).mean())
    with pytest.raises(InputError, match="one positive and one negative"):
        roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(InputError, match="0 or 1"):
        roc_auc([0, 2], [0.2, 0.3])
