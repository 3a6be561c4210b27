"""Classification metrics computed the standard way: ROC AUC with confidence intervals,
operating-point metrics, expected calibration error and reliability curves.

Written on numpy/scipy rather than adding scikit-learn as a dependency for a handful of
formulas; the tests compare against brute-force definitions (AUC as the probability that a random
positive outscores a random negative, ties counting one half).

Conventions: ``labels`` are 0/1 (binary), class indices (multi-class) or an ``(N, K)`` 0/1 matrix
(multi-label); ``scores``/``probs`` are ``(N,)`` for binary (probability of class 1) and
``(N, K)`` otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from medimg.errors import InputError
from medimg.metrics.stats import Estimate

__all__ = [
    "auc_bootstrap_ci",
    "auc_delong_ci",
    "binary_metrics",
    "expected_calibration_error",
    "per_class_table",
    "reliability_curve",
    "roc_auc",
    "roc_curve",
    "threshold_for_sensitivity",
]


def _binary(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise InputError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    if not np.all(np.isin(y, (0, 1))):
        raise InputError("binary labels must be 0 or 1")
    if not np.all(np.isfinite(s)):
        raise InputError("scores contain NaN/Inf")
    return y.astype(bool), s


def _need_both(y: np.ndarray) -> None:
    if y.all() or not y.any():
        raise InputError("AUC needs at least one positive and one negative case")


def roc_auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve (Mann-Whitney U / (n_pos n_neg), ties count one half).

    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y, s = _binary(labels, scores)
    _need_both(y)
    ranks = stats.rankdata(s)
    m, n = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - m * (m + 1) / 2) / (m * n))


def roc_curve(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)``: one point per distinct score (predict positive if
    ``score >= threshold``), starting at ``(0, 0)`` with threshold ``+inf``."""
    y, s = _binary(labels, scores)
    _need_both(y)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s_sorted))[0], s.size - 1]
    tps = np.cumsum(y_sorted)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    tpr = np.r_[0.0, tps / y.sum()]
    fpr = np.r_[0.0, fps / (~y).sum()]
    return fpr, tpr, np.r_[np.inf, s_sorted[last_of_tie]]


def auc_delong_ci(labels: Any, scores: Any, level: float = 0.95) -> Estimate:
    """AUC with DeLong's (1988) asymptotic normal interval, via midrank placement values
    (Sun & Xu 2014), clipped to [0, 1]."""
    y, s = _binary(labels, scores)
    _need_both(y)
    pos, neg = s[y], s[~y]
    m, n = pos.size, neg.size
    rz = stats.rankdata(np.r_[pos, neg])
    v01 = (rz[:m] - stats.rankdata(pos)) / n  # per positive: share of negatives below it
    v10 = 1.0 - (rz[m:] - stats.rankdata(neg)) / m  # per negative: share of positives above
    auc = float(v01.mean())
    var = (np.var(v01, ddof=1) / m if m > 1 else 0.0) + (np.var(v10, ddof=1) / n if n > 1 else 0.0)
    half = float(stats.norm.ppf(0.5 + level / 2) * np.sqrt(var))
    return Estimate(auc, max(0.0, auc - half), min(1.0, auc + half), int(m + n), level)


def auc_bootstrap_ci(
    labels: Any, scores: Any, *, level: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> Estimate:
    """AUC with a percentile-bootstrap interval over cases, resampling positives and negatives
    separately (stratified) so every resample has both classes."""
    y, s = _binary(labels, scores)
    _need_both(y)
    pos, neg = s[y], s[~y]
    rng = np.random.default_rng(seed)
    ip = rng.integers(0, pos.size, (n_resamples, pos.size))
    ineg = rng.integers(0, neg.size, (n_resamples, neg.size))
    both = np.concatenate([pos[ip], neg[ineg]], axis=1)
    ranks = stats.rankdata(both, axis=1)
    m, n = pos.size, neg.size
    aucs = (ranks[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    alpha = (1 - level) / 2
    low, high = np.quantile(aucs, [alpha, 1 - alpha])
    return Estimate(roc_auc(y, s), float(low), float(high), int(m + n), level)


def binary_metrics(labels: Any, scores: Any, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, sensitivity, specificity, PPV, NPV, F1 and balanced accuracy of the decision
    ``score >= threshold``, plus the confusion counts. Undefined ratios are NaN."""
    y, s = _binary(labels, scores)
    p = s >= threshold
    tp, fp = int((p & y).sum()), int((p & ~y).sum())
    fn, tn = int((~p & y).sum()), int((~p & ~y).sum())

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    sens, spec, ppv = ratio(tp, tp + fn), ratio(tn, tn + fp), ratio(tp, tp + fp)
    return {
        "threshold": float(threshold),
        "accuracy": ratio(tp + tn, y.size),
        "sensitivity": sens,
        "specificity": spec,
        "ppv": ppv,
        "npv": ratio(tn, tn + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "balanced_accuracy": (sens + spec) / 2,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def threshold_for_sensitivity(labels: Any, scores: Any, sensitivity: float = 0.9) -> float:
    """The highest threshold whose sensitivity reaches ``sensitivity`` (an operating point
    chosen on validation data)."""
    _, tpr, thr = roc_curve(labels, scores)
    ok = np.nonzero(tpr >= sensitivity)[0]
    return float(thr[ok[0]])


def _top_label(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Confidence and correctness of the predicted class (binary: ``p`` vs ``1 - p``)."""
    if probs.ndim == 1:
        probs = np.stack([1 - probs, probs], axis=1)
    pred = probs.argmax(axis=1)
    return probs.max(axis=1), (pred == labels.astype(int)).astype(np.float64)


def reliability_curve(probs: Any, labels: Any, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Equal-width bins of top-label confidence: per bin ``confidence`` (mean), ``accuracy``
    and ``count`` (empty bins have NaN means); ``edges`` has ``n_bins + 1`` entries."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels).ravel()
    if p.shape[0] != y.size:
        raise InputError(f"probs ({p.shape[0]}) and labels ({y.size}) differ in length")
    conf, correct = _top_label(p, y)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, conf, n_bins) / count
        acc = np.bincount(idx, correct, n_bins) / count
    return {"edges": edges, "confidence": mean_conf, "accuracy": acc, "count": count}


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 10) -> float:
    """ECE (Guo et al. 2017): count-weighted mean |accuracy - confidence| over equal-width bins
    of top-label confidence. ``probs``: ``(N,)`` binary or ``(N, K)`` softmax outputs."""
    curve = reliability_curve(probs, labels, n_bins)
    used = curve["count"] > 0
    gaps = np.abs(curve["accuracy"][used] - curve["confidence"][used])
    return float((gaps * curve["count"][used]).sum() / curve["count"].sum())


def per_class_table(
    labels: Any, probs: Any, task: str, class_names: list[str], threshold: float = 0.5
) -> list[dict[str, float | str]]:
    """One row per class: one-vs-rest AUC and operating-point metrics.

    ``task`` is ``binary`` (one row, class 1), ``multiclass`` (decision: the arg-max class) or
    ``multilabel`` (each label thresholded at ``threshold``). Classes absent from ``labels``
    get NaN AUC.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if task == "binary":
        cols = [(class_names[-1], y.ravel(), p.ravel(), p.ravel() >= threshold)]
    elif task == "multiclass":
        pred = p.argmax(axis=1)
        cols = [(c, y == k, p[:, k], pred == k) for k, c in enumerate(class_names)]
    elif task == "multilabel":
        cols = [(c, y[:, k], p[:, k], p[:, k] >= threshold) for k, c in enumerate(class_names)]
    else:
        raise InputError(f"task must be binary, multiclass or multilabel, got {task!r}")
    rows: list[dict[str, float | str]] = []
    for name, yk, sk, decided in cols:
        yk = np.asarray(yk).astype(int)
        both = 0 < yk.sum() < yk.size
        row: dict[str, float | str] = {"class": name, "n_positive": float(yk.sum())}
        row["auc"] = roc_auc(yk, sk) if both else float("nan")
        row.update(binary_metrics(yk, decided.astype(float), 0.5))
        row.pop("threshold")
        rows.append(row)
    return rows
