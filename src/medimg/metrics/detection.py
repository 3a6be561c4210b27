"""Detection metrics the way challenges compute them: LUNA16 FROC/CPM, box IoU, NMS.

Boxes are ``StandardMode`` corners, MONAI's convention: ``(x0, y0, x1, y1)`` in 2D and
``(x0, y0, z0, x1, y1, z1)`` in 3D, in any one unit (voxels or mm), ``x1 >= x0``.

**Matching, LUNA16's rule** (``noduleCADEvaluationLUNA16.py``), per scan: a candidate *hits* a
nodule when the distance from the candidate to the nodule centre is strictly smaller than the
nodule's radius (``d^2 < (diameter/2)^2``). A nodule is detected with the highest score among the
candidates that hit it (a candidate hitting two nodules counts for both). Candidates that hit an
*excluded* finding (``annotations_excluded.csv``; diameter < 0 there means 10 mm, as the LUNA16
script sets) and no included nodule are ignored: neither TP nor FP. All other candidates are FPs.
The IoU variant (:func:`match_iou`) applies the same bookkeeping with "box IoU >= threshold".

**FROC**: for every distinct score ``t`` (descending), ``FPs/scan(t) = #FP >= t / n_scans`` and
``sensitivity(t) = #nodules detected with score >= t / #nodules``; the curve starts at ``(0, 0)``.
Sensitivities at 1/8, 1/4, 1/2, 1, 2, 4, 8 FPs per scan are read by linear interpolation
(``np.interp``, clamped at the ends, as LUNA16 and MONAI's ``compute_froc_score`` do), and the
**CPM** is their mean. Bootstrap intervals resample scans (LUNA16's bootstrap unit; percentile intervals as
:func:`medimg.metrics.stats.bootstrap_ci`, whose per-case-mean form cannot express a FROC).

Hand-written in float64 NumPy rather than MONAI's ``box_utils`` (torch, float32 internally): the
FROC must reproduce a reference to 1e-9, and metrics run where torch is not wanted. NMS keeps the
same boxes as MONAI's ``non_max_suppression`` (bench/bench_detect_metrics.py checks both).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from medimg.errors import InputError
from medimg.metrics.stats import Estimate

__all__ = [
    "FROC_RATES",
    "FROCResult",
    "ScanMatch",
    "box_iou",
    "boxes_to_centers",
    "centers_to_boxes",
    "froc",
    "froc_bootstrap",
    "froc_curve",
    "match_iou",
    "match_luna16",
    "nms",
    "operating_point",
]

#: LUNA16's false-positive rates per scan; the CPM is the mean sensitivity over them.
FROC_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
#: LUNA16's evaluation script gives excluded findings without a diameter a 10 mm one.
EXCLUDED_DEFAULT_DIAMETER_MM = 10.0


def _boxes(b: np.ndarray | Sequence, name: str) -> np.ndarray:
    b = np.asarray(b, dtype=np.float64)
    if b.size == 0:
        return b.reshape(0, b.shape[-1] if b.ndim == 2 and b.shape[-1] in (4, 6) else 6)
    if b.ndim != 2 or b.shape[1] not in (4, 6):
        raise InputError(f"{name} must be (N, 4) or (N, 6) corner boxes, got shape {b.shape}")
    d = b.shape[1] // 2
    if not np.all(np.isfinite(b)) or np.any(b[:, d:] < b[:, :d]):
        raise InputError(f"{name} need finite corners with max >= min (x0, y0, [z0,] x1, y1, [z1])")
    return b


def centers_to_boxes(centers: np.ndarray | Sequence, sizes: np.ndarray | Sequence) -> np.ndarray:
    """Corner boxes from centres ``(N, D)`` and sizes ``(N, D)`` or ``(N,)`` (cubes/squares)."""
    c = np.atleast_2d(np.asarray(centers, dtype=np.float64))
    s = np.asarray(sizes, dtype=np.float64)
    s = np.broadcast_to(s[:, None] if s.ndim == 1 else s, c.shape)
    if np.any(s < 0):
        raise InputError("box sizes must be >= 0")
    return np.concatenate([c - s / 2, c + s / 2], axis=1)


def boxes_to_centers(boxes: np.ndarray | Sequence) -> tuple[np.ndarray, np.ndarray]:
    """``(centres (N, D), sizes (N, D))`` of corner boxes."""
    b = _boxes(boxes, "boxes")
    d = b.shape[1] // 2
    return (b[:, :d] + b[:, d:]) / 2, b[:, d:] - b[:, :d]


def box_iou(boxes1: np.ndarray | Sequence, boxes2: np.ndarray | Sequence) -> np.ndarray:
    """Pairwise IoU ``(N, M)`` of corner boxes, float64 (0 where both boxes are empty)."""
    a, b = _boxes(boxes1, "boxes1"), _boxes(boxes2, "boxes2")
    d = a.shape[1] // 2
    if b.shape[1] // 2 != d:
        raise InputError(f"cannot compare {d}D boxes with {b.shape[1] // 2}D boxes")
    lo = np.maximum(a[:, None, :d], b[None, :, :d])
    hi = np.minimum(a[:, None, d:], b[None, :, d:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area_a, area_b = np.prod(a[:, d:] - a[:, :d], axis=1), np.prod(b[:, d:] - b[:, :d], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(
    boxes: np.ndarray | Sequence,
    scores: np.ndarray | Sequence,
    iou_threshold: float,
    max_keep: int = -1,
) -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, best score first. A box is dropped when its
    IoU with a kept, higher-scored box exceeds ``iou_threshold``; ties keep the earlier index
    (stable sort), as MONAI's ``non_max_suppression``."""
    b = _boxes(boxes, "boxes")
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.shape[0] != b.shape[0]:
        raise InputError(f"{b.shape[0]} boxes but {s.shape[0]} scores")
    order = np.argsort(-s, kind="stable")
    keep: list[int] = []
    alive = np.ones(len(order), dtype=bool)
    for pos, idx in enumerate(order):
        if not alive[pos]:
            continue
        keep.append(int(idx))
        if 0 < max_keep <= len(keep):
            break
        rest = np.flatnonzero(alive[pos + 1 :]) + pos + 1
        if rest.size:
            over = box_iou(b[idx : idx + 1], b[order[rest]])[0] > iou_threshold
            alive[rest[over]] = False
    return np.asarray(keep, dtype=np.int64)


@dataclass(frozen=True)
class ScanMatch:
    """One scan's matching: ``nodule_scores`` (best score per included nodule, NaN if missed),
    ``fp_scores`` (candidates hitting nothing), ``tp_scores`` (candidates hitting an included
    nodule, for precision) and the count of ignored candidates (hitting excluded findings only)."""

    nodule_scores: np.ndarray
    fp_scores: np.ndarray
    tp_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    n_ignored: int = 0


def _bookkeeping(scores: np.ndarray, hits: np.ndarray, hits_excl: np.ndarray) -> ScanMatch:
    """``hits`` (K candidates x N nodules), ``hits_excl`` (K x E) booleans -> :class:`ScanMatch`."""
    best = np.where(hits, scores[:, None], -np.inf).max(axis=0, initial=-np.inf)
    nodule_scores = np.where(np.isfinite(best), best, np.nan)
    is_tp, is_excl = hits.any(axis=1), hits_excl.any(axis=1)
    fp = ~is_tp & ~is_excl
    return ScanMatch(nodule_scores, scores[fp], scores[is_tp], int(np.sum(~is_tp & is_excl)))


def match_luna16(
    candidates: np.ndarray | Sequence,
    scores: np.ndarray | Sequence,
    nodules: np.ndarray | Sequence,
    diameters: np.ndarray | Sequence,
    excluded: np.ndarray | Sequence = (),
    excluded_diameters: np.ndarray | Sequence = (),
) -> ScanMatch:
    """LUNA16's hit rule for one scan (module doc): candidate/nodule centres ``(K, 3)``/``(N, 3)``
    in mm, nodule diameters in mm, optional excluded findings."""
    cand = np.asarray(candidates, dtype=np.float64).reshape(-1, 3)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.shape[0] != cand.shape[0]:
        raise InputError(f"{cand.shape[0]} candidates but {s.shape[0]} scores")
    nod = np.asarray(nodules, dtype=np.float64).reshape(-1, 3)
    dia = np.asarray(diameters, dtype=np.float64).ravel()
    exc = np.asarray(excluded, dtype=np.float64).reshape(-1, 3)
    edia = np.asarray(excluded_diameters, dtype=np.float64).ravel()
    if dia.shape[0] != nod.shape[0] or edia.shape[0] != exc.shape[0]:
        raise InputError("need one diameter per nodule (and per excluded finding)")
    if np.any(dia <= 0):
        raise InputError("included nodules need a diameter > 0 mm")
    edia = np.where(edia < 0, EXCLUDED_DEFAULT_DIAMETER_MM, edia)

    def within(centres: np.ndarray, d: np.ndarray) -> np.ndarray:
        d2 = ((cand[:, None, :] - centres[None, :, :]) ** 2).sum(axis=-1)
        return d2 < (d[None, :] / 2.0) ** 2

    return _bookkeeping(s, within(nod, dia), within(exc, edia))


def match_iou(
    boxes: np.ndarray | Sequence,
    scores: np.ndarray | Sequence,
    gt_boxes: np.ndarray | Sequence,
    excluded_boxes: np.ndarray | Sequence = (),
    iou_threshold: float = 0.1,
) -> ScanMatch:
    """The IoU variant of :func:`match_luna16`: a hit is ``IoU >= iou_threshold``."""
    b = _boxes(boxes, "boxes")
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.shape[0] != b.shape[0]:
        raise InputError(f"{b.shape[0]} boxes but {s.shape[0]} scores")
    gt, ex = _boxes(gt_boxes, "gt_boxes"), _boxes(excluded_boxes, "excluded_boxes")
    hits = box_iou(b, gt) >= iou_threshold if gt.size else np.zeros((len(b), 0), bool)
    hits_ex = box_iou(b, ex) >= iou_threshold if ex.size else np.zeros((len(b), 0), bool)
    return _bookkeeping(s, hits, hits_ex)


def froc_curve(matches: Sequence[ScanMatch]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fps_per_scan, sensitivity, thresholds)``, fps increasing, starting at ``(0, 0, inf)``."""
    if len(matches) == 0:
        raise InputError("FROC needs at least one scan")
    nod = np.concatenate([m.nodule_scores for m in matches])
    if nod.size == 0:
        raise InputError("FROC needs at least one included nodule; the annotations are empty")
    fp = np.sort(np.concatenate([m.fp_scores for m in matches]))
    det = np.sort(nod[np.isfinite(nod)])
    thr = np.unique(np.concatenate([fp, det]))[::-1]
    n_fp = fp.size - np.searchsorted(fp, thr, side="left")  # count >= t
    n_tp = det.size - np.searchsorted(det, thr, side="left")
    fps = np.r_[0.0, n_fp / len(matches)]
    sens = np.r_[0.0, n_tp / nod.size]
    return fps, sens, np.r_[np.inf, thr]


@dataclass(frozen=True)
class FROCResult:
    """Sensitivities at ``rates`` FPs/scan, their mean (CPM) and the whole curve."""

    rates: tuple[float, ...]
    sensitivities: tuple[float, ...]
    cpm: float
    n_scans: int
    n_nodules: int
    n_detected: int
    fps: np.ndarray
    sens: np.ndarray
    thresholds: np.ndarray


def froc(matches: Sequence[ScanMatch], rates: Sequence[float] = FROC_RATES) -> FROCResult:
    """The FROC points and the CPM of matched scans (module doc)."""
    fps, sens, thr = froc_curve(matches)
    at = np.interp(np.asarray(rates, dtype=np.float64), fps, sens)
    nod = np.concatenate([m.nodule_scores for m in matches])
    return FROCResult(
        tuple(float(r) for r in rates), tuple(float(v) for v in at), float(np.mean(at)),
        len(matches), int(nod.size), int(np.isfinite(nod).sum()), fps, sens, thr,
    )  # fmt: skip


def _bootstrap_scans(
    matches: Sequence[ScanMatch], fn, n_out: int, n_resamples: int, seed: int
) -> np.ndarray:
    """``fn(list_of_matches) -> n_out floats`` over scan resamples (with replacement); resamples
    without any included nodule (where sensitivity is undefined) are skipped."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(matches), size=(n_resamples, len(matches)))
    rows = []
    for d in draws:
        chosen = [matches[i] for i in d]
        if sum(m.nodule_scores.size for m in chosen):
            rows.append(fn(chosen))
    return np.asarray(rows, dtype=np.float64).reshape(-1, n_out)


def _estimates(values: Sequence[float], rows: np.ndarray, n: int, level: float) -> list[Estimate]:
    alpha = (1 - level) / 2
    out = []
    for j, value in enumerate(values):
        lo, hi = np.quantile(rows[:, j], [alpha, 1 - alpha]) if len(rows) else (value, value)
        out.append(Estimate(float(value), float(lo), float(hi), n, level))
    return out


def froc_bootstrap(
    matches: Sequence[ScanMatch],
    rates: Sequence[float] = FROC_RATES,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Estimate]:
    """Bootstrap (over scans) estimates of the CPM and of each FROC point: keys ``"cpm"`` and
    ``"sens@<rate>"``."""
    full = froc(matches, rates)

    def fn(chosen: list[ScanMatch]) -> list[float]:
        r = froc(chosen, rates)
        return [r.cpm, *r.sensitivities]

    rows = _bootstrap_scans(matches, fn, 1 + len(rates), n_resamples, seed)
    keys = ["cpm", *(f"sens@{r:g}" for r in rates)]
    values = [full.cpm, *full.sensitivities]
    return dict(zip(keys, _estimates(values, rows, len(matches), level)))


def _op_point(matches: Sequence[ScanMatch], threshold: float) -> tuple[float, float, float]:
    nod = np.concatenate([m.nodule_scores for m in matches])
    tp = sum(int((m.tp_scores >= threshold).sum()) for m in matches)
    fp = sum(int((m.fp_scores >= threshold).sum()) for m in matches)
    sens = float(np.sum(nod >= threshold) / nod.size) if nod.size else np.nan
    prec = tp / (tp + fp) if tp + fp else 1.0
    return sens, prec, fp / len(matches)


def operating_point(
    matches: Sequence[ScanMatch],
    *,
    threshold: float | None = None,
    fp_per_scan: float | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float | Estimate]:
    """Sensitivity and precision (candidates hitting a nodule / non-ignored candidates) at a score
    ``threshold``, or at the lowest threshold giving at most ``fp_per_scan`` FPs per scan, with
    bootstrap intervals over scans. Returns ``threshold``, ``fp_per_scan``, ``sensitivity``,
    ``precision``."""
    if (threshold is None) == (fp_per_scan is None):
        raise InputError("give exactly one of threshold or fp_per_scan")
    if threshold is None:
        fps, _, thr = froc_curve(matches)
        ok = np.flatnonzero(fps <= float(fp_per_scan))  # type: ignore[arg-type]
        threshold = float(thr[ok[-1]])
    t = float(threshold)
    sens, prec, fpr = _op_point(matches, t)
    rows = _bootstrap_scans(matches, lambda c: _op_point(c, t)[:2], 2, n_resamples, seed)
    e_sens, e_prec = _estimates([sens, prec], rows, len(matches), level)
    return {"threshold": t, "fp_per_scan": fpr, "sensitivity": e_sens, "precision": e_prec}
