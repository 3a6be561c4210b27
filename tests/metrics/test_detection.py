"""Detection metrics: box geometry, NMS, LUNA16 matching and FROC against hand-computed cases."""

import numpy as np
import pytest

from medimg.errors import InputError
from medimg.metrics.detection import (
    FROC_RATES,
    box_iou,
    boxes_to_centers,
    centers_to_boxes,
    froc,
    froc_bootstrap,
    match_iou,
    match_luna16,
    nms,
    operating_point,
)


def _two_scans():
    """Scan A: nodules at x=0 (10 mm) and x=50 (6 mm), an excluded finding at x=100 without a
    diameter (-> 10 mm). Scan B: no nodule, two candidates."""
    cands = [(1, 1, 1), (2, 0, 0), (52.9, 0, 0), (53.0, 0, 0), (104, 0, 0), (200, 0, 0)]
    a = match_luna16(cands, [0.9, 0.3, 0.5, 0.2, 0.8, 0.7], [(0, 0, 0), (50, 0, 0)], [10, 6],
                     excluded=[(100, 0, 0)], excluded_diameters=[-1])  # fmt: skip
    b = match_luna16([(0, 0, 0), (9, 9, 9)], [0.6, 0.1], np.zeros((0, 3)), [])
    return [a, b]


def test_luna16_matching_by_hand():
    a, b = _two_scans()
    np.testing.assert_array_equal(a.nodule_scores, [0.9, 0.5])  # best of the hits
    np.testing.assert_array_equal(np.sort(a.fp_scores), [0.2, 0.7])  # 53.0 is on the radius: miss
    np.testing.assert_array_equal(np.sort(a.tp_scores), [0.3, 0.5, 0.9])
    assert a.n_ignored == 1  # the hit on the excluded finding
    np.testing.assert_array_equal(np.sort(b.fp_scores), [0.1, 0.6])
    assert b.nodule_scores.size == 0


def test_froc_and_cpm_by_hand():
    res = froc(_two_scans())
    # curve: (0,0) (0,.5)@.9 (.5,.5)@.7 (1,.5)@.6 (1,1)@.5 (1.5,1)@.2 (2,1)@.1
    np.testing.assert_allclose(res.fps, [0, 0, 0.5, 1, 1, 1.5, 2])
    np.testing.assert_allclose(res.sens, [0, 0.5, 0.5, 0.5, 1, 1, 1])
    np.testing.assert_allclose(res.sensitivities, [0.5, 0.5, 0.5, 1, 1, 1, 1])
    assert res.cpm == pytest.approx(5.5 / 7, abs=1e-12)
    assert (res.n_scans, res.n_nodules, res.n_detected) == (2, 2, 2)


def test_missed_nodule_and_no_false_positive():
    m = match_luna16([(0, 0, 0)], [0.4], [(0, 0, 0), (30, 0, 0)], [4, 4])
    res = froc([m])
    assert np.isnan(m.nodule_scores[1]) and res.n_detected == 1
    assert res.sensitivities == (0.5,) * 7  # no FP at all: the curve stays at 0.5


def test_froc_matches_monai_reference():
    from monai.metrics import compute_froc_curve_data, compute_froc_score

    rng = np.random.default_rng(3)
    matches = []
    for _ in range(12):
        nod = rng.uniform(0, 100, (rng.integers(0, 4), 3))
        cand = np.r_[nod + rng.normal(0, 2, nod.shape), rng.uniform(0, 100, (8, 3))]
        matches.append(match_luna16(cand, rng.random(len(cand)), nod, rng.uniform(3, 20, len(nod))))
    ours = froc(matches)
    fp = np.concatenate([m.fp_scores for m in matches])
    nod = np.concatenate([m.nodule_scores for m in matches])
    tp = nod[np.isfinite(nod)]
    # MONAI skips the lowest threshold; a sentinel below every score restores it
    fps, sens = compute_froc_curve_data(np.r_[fp, -1.0], tp, nod.size, len(matches))
    ref = compute_froc_score(fps, sens, FROC_RATES)
    assert abs(ours.cpm - ref) < 1e-12


def test_iou_variant_and_bootstrap():
    gt = centers_to_boxes([(10, 10, 10)], [6])
    m = match_iou(centers_to_boxes([(10, 10, 11), (40, 40, 40)], [6, 6]), [0.8, 0.9], gt)
    assert m.nodule_scores.tolist() == [0.8] and m.fp_scores.tolist() == [0.9]
    est = froc_bootstrap(_two_scans() * 5, n_resamples=200)
    assert est["cpm"].low <= est["cpm"].value <= est["cpm"].high
    assert set(est) == {"cpm", *(f"sens@{r:g}" for r in FROC_RATES)}


def test_operating_points():
    scans = _two_scans()
    op = operating_point(scans, threshold=0.5, n_resamples=50)
    assert op["sensitivity"].value == 1.0 and op["precision"].value == 0.5
    assert op["fp_per_scan"] == 1.0
    op = operating_point(scans, fp_per_scan=0.5, n_resamples=50)
    assert op["threshold"] == 0.7 and op["sensitivity"].value == 0.5
    with pytest.raises(InputError, match="exactly one"):
        operating_point(scans)


def test_box_iou_and_conversions():
    a = np.array([[0, 0, 0, 2, 2, 2]])
    b = np.array([[1, 1, 1, 3, 3, 3], [5, 5, 5, 6, 6, 6], [0, 0, 0, 2, 2, 2]])
    np.testing.assert_allclose(box_iou(a, b), [[1 / 15, 0, 1]])
    np.testing.assert_allclose(box_iou([[0, 0, 2, 2]], [[1, 0, 3, 2]]), [[2 / 6]])
    c, s = boxes_to_centers(centers_to_boxes([(1.0, 2.0, 3.0)], [(2.0, 4.0, 6.0)]))
    np.testing.assert_allclose(c, [[1, 2, 3]]) and np.testing.assert_allclose(s, [[2, 4, 6]])
    with pytest.raises(InputError, match="max >= min"):
        box_iou([[2, 0, 0, 1, 1, 1]], a)


def test_nms_by_hand_and_like_monai():
    boxes = np.array([[0, 0, 0, 10, 10, 10], [1, 1, 1, 11, 11, 11], [20, 20, 20, 25, 25, 25]])
    assert nms(boxes, [0.5, 0.9, 0.7], 0.3).tolist() == [1, 2]  # box 0 overlaps box 1 (IoU .58)
    assert nms(boxes, [0.5, 0.9, 0.7], 0.7).tolist() == [1, 2, 0]
    from monai.data.box_utils import non_max_suppression

    rng = np.random.default_rng(0)
    lo = rng.uniform(0, 50, (200, 3))
    bx = np.c_[lo, lo + rng.uniform(2, 15, (200, 3))]
    sc = rng.random(200)
    np.testing.assert_array_equal(nms(bx, sc, 0.2), non_max_suppression(bx, sc, 0.2))


def test_empty_annotations_error():
    with pytest.raises(InputError, match="at least one included nodule"):
        froc([match_luna16([(0, 0, 0)], [0.5], np.zeros((0, 3)), [])])
