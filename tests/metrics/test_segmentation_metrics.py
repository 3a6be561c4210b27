"""Segmentation metrics: hand-computed cases, empty conventions, agreement with MONAI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medimg.errors import InputError
from medimg.metrics.segmentation import (
    assd,
    case_metrics,
    dice,
    empty_distance,
    hd95,
    iou,
    normalized_surface_dice,
    summarize,
    surface_voxels,
)
from medimg.metrics.stats import Estimate


def _cube_pair() -> tuple[np.ndarray, np.ndarray]:
    """4x4x4 cube and the same cube shifted by one voxel along z (the 2.5 mm axis)."""
    gt = np.zeros((10, 9, 11), np.uint8)
    gt[2:6, 2:6, 2:6] = 1
    pred = np.zeros_like(gt)
    pred[2:6, 2:6, 3:7] = 1
    return pred, gt


def test_shifted_cube_hand_computed_3d() -> None:
    # Each 56-voxel cube surface: 36 voxels lie on the other surface (0 mm), the 4 inner voxels of
    # the overlapping face are 1 mm from a side face, the 16 of the outlying face are 2.5 mm away.
    pred, gt = _cube_pair()
    m = case_metrics(pred, gt, labels=[1], spacing=(1.0, 1.0, 2.5), nsd_tolerance_mm=1.0)[1]
    assert m["dice"] == pytest.approx(96 / 128)
    assert m["iou"] == pytest.approx(48 / 80)
    assert m["hd95"] == pytest.approx(2.5)
    assert m["assd"] == pytest.approx((16 * 2.5 + 4 * 1.0) / 56)
    assert m["nsd"] == pytest.approx(40 / 56)
    nsd_25 = normalized_surface_dice(pred, gt, spacing=(1, 1, 2.5), tolerance_mm=2.5)
    assert nsd_25 == pytest.approx(1.0)
    # spacing matters: the same voxels 1 mm apart along z give 1 mm distances
    assert hd95(pred, gt, spacing=(1, 1, 1)) == pytest.approx(1.0)
    assert int(surface_voxels(gt).sum()) == 56


def test_shifted_rectangle_hand_computed_2d() -> None:
    gt = np.zeros((7, 8), bool)
    gt[1:5, 1:4] = True
    pred = np.roll(gt, 1, axis=0)  # shift by one 0.5 mm voxel along axis 0
    sp = (0.5, 2.0)
    assert dice(pred, gt) == pytest.approx(18 / 24)
    assert iou(pred, gt) == pytest.approx(9 / 15)
    # 10 surface voxels each; 4 of them (far face + one inner voxel) are 0.5 mm away
    assert hd95(pred, gt, spacing=sp) == pytest.approx(0.5)
    assert assd(pred, gt, spacing=sp) == pytest.approx(8 * 0.5 / 20)
    assert normalized_surface_dice(pred, gt, spacing=sp, tolerance_mm=0.25) == pytest.approx(0.6)


def test_hd95_ignores_a_far_speck_that_the_maximum_would_see() -> None:
    gt = np.zeros((30, 30, 12), bool)
    gt[5:20, 5:20, 2:10] = True
    pred = gt.copy()
    pred[28, 28, 11] = True  # one isolated voxel far away
    assert hd95(pred, gt, spacing=(1, 1, 2)) == 0.0
    assert assd(pred, gt, spacing=(1, 1, 2)) > 0.0


def test_empty_conventions() -> None:
    shape, sp = (5, 6, 7), (1.0, 2.0, 3.0)
    empty = np.zeros(shape, np.uint8)
    full = empty.copy()
    full[1:3, 1:4, 2:5] = 2
    both = case_metrics(empty, empty, labels=[2], spacing=sp)[2]
    assert both == {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "assd": 0.0, "nsd": 1.0}
    diag = float(np.sqrt(5**2 + 12**2 + 21**2))
    assert empty_distance(shape, sp) == pytest.approx(diag)
    for pred, gt in ((full, empty), (empty, full)):
        one = case_metrics(pred, gt, labels=[2], spacing=sp)[2]
        assert one == {"dice": 0.0, "iou": 0.0, "hd95": diag, "assd": diag, "nsd": 0.0}
    # the single functions follow the same convention
    assert hd95(full == 2, empty, spacing=sp) == pytest.approx(diag)
    assert normalized_surface_dice(empty, empty, spacing=sp) == 1.0


def test_multilabel_channel_axis_and_summary_with_cis() -> None:
    rng = np.random.default_rng(3)
    cases = []
    for _ in range(6):
        gt = rng.integers(0, 3, size=(1, 9, 11, 5))
        pred = np.where(rng.random(gt.shape) < 0.8, gt, 0)
        cases.append(case_metrics(pred, gt, labels=[1, 2], spacing=(1.0, 1.0, 2.5)))
    # a case where label 2 is missing from the prediction still summarises (finite convention)
    gt = np.zeros((9, 11, 5), np.uint8)
    gt[2:5, 2:5, 1:3] = 2
    gt[6:8, 6:9, 1:3] = 1
    cases.append(case_metrics(np.where(gt == 1, 1, 0), gt, labels=[1, 2], spacing=(1, 1, 2.5)))
    assert cases[-1][2]["dice"] == 0.0 and cases[-1][1]["dice"] == 1.0
    s = summarize(cases)
    assert set(s) == {1, 2} and set(s[1]) == {"dice", "iou", "hd95", "assd", "nsd"}
    est = s[2]["dice"]
    assert isinstance(est, Estimate) and est.n == 7
    assert est.value == pytest.approx(np.mean([c[2]["dice"] for c in cases]))
    assert est.low <= est.value <= est.high
    assert summarize(cases) == s  # seeded


def test_bad_inputs_raise_one_line_errors() -> None:
    a = np.zeros((4, 5, 6), bool)
    with pytest.raises(InputError, match="same shape"):
        dice(a, a[:3])
    with pytest.raises(InputError, match="spacing"):
        case_metrics(a, a, labels=[1], spacing=(1, 1))
    with pytest.raises(InputError, match="spacing"):
        hd95(a, a, spacing=(1, 0, 1))
    with pytest.raises(InputError, match="nsd_tolerance_mm"):
        case_metrics(a, a, labels=[1], spacing=(1, 1, 1), nsd_tolerance_mm=-1)
    with pytest.raises(InputError, match="labels"):
        case_metrics(a, a, labels=[], spacing=(1, 1, 1))
    with pytest.raises(InputError, match="score the same labels"):
        summarize([{1: {"dice": 1.0}}, {2: {"dice": 1.0}}])


def _blobs(shape: tuple[int, ...], seed: int, level: float) -> np.ndarray:
    field = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), 2.0)
    return field > level * field.std()


@pytest.mark.parametrize(
    ("shape", "spacing"), [((23, 19, 17), (1.0, 1.0, 2.5)), ((37, 31), (0.7, 1.3))]
)
def test_agrees_with_monai_on_random_blobs(shape: tuple[int, ...], spacing: tuple) -> None:
    from monai.metrics import (
        DiceMetric,
        HausdorffDistanceMetric,
        SurfaceDiceMetric,
        SurfaceDistanceMetric,
    )

    gt = _blobs(shape, 0, 0.3)
    pred = np.roll(_blobs(shape, 0, 0.4), 1, axis=0) | _blobs(shape, 1, 1.8)
    tol = 1.5
    ours = case_metrics(pred.astype(np.uint8), gt.astype(np.uint8), labels=[1], spacing=spacing,
                        nsd_tolerance_mm=tol)[1]  # fmt: skip
    yp = torch.from_numpy(pred[None, None]).float()
    y = torch.from_numpy(gt[None, None]).float()
    theirs = {
        "dice": DiceMetric()(yp, y).item(),
        "hd95": HausdorffDistanceMetric(percentile=95)(yp, y, spacing=spacing).item(),
        "assd": SurfaceDistanceMetric(symmetric=True)(yp, y, spacing=spacing).item(),
        "nsd": SurfaceDiceMetric([tol])(yp, y, spacing=spacing).item(),
    }
    assert 0.3 < ours["dice"] < 0.95  # a non-trivial overlap
    # same definitions: only MONAI's float32 rounding separates the values
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
