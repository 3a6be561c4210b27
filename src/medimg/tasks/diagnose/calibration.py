"""Probabilities from logits, and temperature scaling (Guo et al. 2017) fitted on validation.

One scalar ``T > 0`` divides the logits; it is chosen to minimise the validation negative
log-likelihood, which leaves the ranking (and so the AUC) unchanged and only fixes confidence.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, special

from medimg.errors import InputError

__all__ = ["fit_temperature", "nll", "probabilities"]


def probabilities(logits: np.ndarray, task: str, temperature: float = 1.0) -> np.ndarray:
    """``(N,)`` probability of the positive class (binary), softmax ``(N, K)`` (multi-class) or
    per-label sigmoids ``(N, K)`` (multi-label) of ``logits / temperature``."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    if task == "binary":
        return special.expit(z.reshape(len(z), -1)[:, 0])
    if task == "multiclass":
        return special.softmax(z, axis=1)
    if task == "multilabel":
        return special.expit(z)
    raise InputError(f"task must be binary, multiclass or multilabel, got {task!r}")


def nll(logits: np.ndarray, labels: np.ndarray, task: str, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``logits / temperature``."""
    eps = 1e-12
    p = probabilities(logits, task, temperature)
    y = np.asarray(labels)
    if task == "multiclass":
        return float(-np.mean(np.log(p[np.arange(len(y)), y.astype(int)] + eps)))
    y = y.reshape(p.shape).astype(np.float64)
    return float(-np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, task: str) -> float:
    """The temperature in [0.05, 20] that minimises validation NLL (bounded scalar search)."""
    if len(logits) < 2:
        raise InputError("temperature scaling needs at least 2 validation cases")
    res = optimize.minimize_scalar(
        lambda log_t: nll(logits, labels, task, float(np.exp(log_t))),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
    )
    return float(np.exp(res.x))
