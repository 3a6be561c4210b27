"""Sensitivity per nodule type and per size at one operating point, with bootstrap intervals.

The operating point (a score threshold) is chosen on all scans (e.g. 1 FP/scan); a nodule of a
group counts as found when a candidate scoring at least that threshold hits it (LUNA16's rule).
Intervals: :func:`medimg.metrics.stats.bootstrap_ci` over the scans holding the group's nodules
(nodules of one scan move together, as in the FROC bootstrap). Types come from an optional
``nodule_type`` column of ``annotations.csv`` (written by ``medimg detect simulate --varied``;
LUNA16 readers ignore extra columns); sizes from ``diameter_mm``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medimg.io.inputs import read_csv_rows
from medimg.metrics.detection import ScanMatch
from medimg.metrics.stats import Estimate, bootstrap_ci
from medimg.typing import PathType

__all__ = ["SIZE_BINS_MM", "read_nodule_types", "sensitivity_by_group", "size_groups"]

#: Diameter bins (mm, lower bound inclusive); the last one takes everything above.
SIZE_BINS_MM = ((3.0, 6.0), (6.0, 10.0), (10.0, 20.0), (20.0, 30.0))


def read_nodule_types(annotations: PathType) -> dict[str, list[str]] | None:
    """``{uid: [type per annotation row, in file order]}`` from the ``nodule_type`` column, or
    None when the file has none (plain LUNA16)."""
    rows = read_csv_rows(annotations, required=("seriesuid",))
    if not rows or "nodule_type" not in rows[0]:
        return None
    out: dict[str, list[str]] = {}
    for row in rows:
        uid = (row["seriesuid"] or "").strip()
        out.setdefault(uid, []).append((row.get("nodule_type") or "unknown").strip() or "unknown")
    return out


def size_groups(diameters: np.ndarray) -> list[str]:
    """The size bin name (``"3-6 mm"`` ...) of each diameter."""
    names = []
    for d in np.asarray(diameters, dtype=np.float64).ravel():
        lo, hi = next(((a, b) for a, b in SIZE_BINS_MM if d < b), SIZE_BINS_MM[-1])
        names.append(f"{lo:g}-{hi:g} mm" if d >= SIZE_BINS_MM[0][0] else f"<{lo:g} mm")
    return names


def _order(name: str) -> tuple[float, str]:
    """Size bins by their lower bound ("<3 mm" first), then names alphabetically."""
    head = name.split("-")[0]
    if name.startswith("<"):
        return (-1.0, name)
    try:
        return (float(head), name)
    except ValueError:
        return (np.inf, name)


def sensitivity_by_group(
    matches: Sequence[ScanMatch],
    groups: Sequence[Sequence[str]],
    threshold: float,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, dict]:
    """``{group: {"n": nodules, "sensitivity": Estimate}}`` at ``threshold``; ``groups[i][j]``
    names the group of nodule ``j`` of scan ``i`` (the order of ``nodule_scores``)."""
    found: dict[str, list[tuple[int, int]]] = {}
    for m, g in zip(matches, groups):
        hit = np.nan_to_num(m.nodule_scores, nan=-np.inf) >= threshold
        for name in sorted(set(g)):
            sel = np.asarray(g) == name
            found.setdefault(name, []).append((int(hit[sel].sum()), int(sel.sum())))
    out = {}
    for name, per_scan in sorted(found.items(), key=lambda kv: _order(kv[0])):
        counts = np.asarray(per_scan, dtype=np.float64)

        def ratio(idx: np.ndarray, c: np.ndarray = counts) -> float:
            chosen = c[idx.astype(int)]
            return float(chosen[:, 0].sum() / chosen[:, 1].sum())

        est: Estimate = bootstrap_ci(np.arange(len(counts)), ratio, n_resamples=n_resamples,
                                     seed=seed)  # fmt: skip
        out[name] = {"n": int(counts[:, 1].sum()), "sensitivity": est}
    return out
