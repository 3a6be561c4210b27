"""Patient-level k-fold splits: all cases of one patient fall in the same fold.

Deterministic for a seed (a seeded permutation of the sorted patient ids, dealt round-robin),
so fold ``K`` names the same validation cases on every machine.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from medimg.errors import InputError

__all__ = ["kfold_split", "patient_id"]

_SUFFIX = re.compile(r"[_-](?:tp|time|visit|scan|ses|t)\d+$", re.IGNORECASE)


def patient_id(case_id: str) -> str:
    """Default patient key: the case id without a trailing time-point suffix
    (``pat01_tp2`` -> ``pat01``, ``ses``/``visit``/``scan`` likewise)."""
    return _SUFFIX.sub("", case_id)


def kfold_split(
    case_ids: Sequence[str],
    k: int = 5,
    *,
    seed: int = 0,
    patient_of: Callable[[str], str] = patient_id,
) -> list[tuple[list[str], list[str]]]:
    """``k`` ``(train, val)`` lists of case ids; patients never straddle train and val.

    Raises :class:`InputError` when there are fewer patients than folds.
    """
    if k < 2:
        raise InputError(f"k must be >= 2 folds, got {k}")
    groups: dict[str, list[str]] = {}
    for cid in case_ids:
        groups.setdefault(patient_of(cid), []).append(cid)
    if len(groups) < k:
        raise InputError(f"{len(groups)} patients cannot fill {k} folds; lower k or add data")
    patients = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(patients))
    folds: list[list[str]] = [[] for _ in range(k)]
    for i, j in enumerate(order):
        folds[i % k].extend(groups[patients[j]])
    out = []
    for f in range(k):
        val = sorted(folds[f])
        train = sorted(c for g, fold in enumerate(folds) if g != f for c in fold)
        out.append((train, val))
    return out
