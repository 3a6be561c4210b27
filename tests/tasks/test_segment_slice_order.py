"""Prediction does not depend on how a file orders its slices: one scan written as NIfTI and as a
DICOM series (which reads back with its slices reversed) gets the same labels; the DICOM-SEG
names the model that made it."""

from __future__ import annotations

import itertools

import numpy as np
import pydicom
import pytest

from medimg.cli import main
from medimg.io.api import load, save
from medimg.io.image import Image
from medimg.tasks.segment.predict import _reorient_like


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """An abdomen phantom in whole HU on a left-handed (LAS, as dcm2niix writes) grid whose
    spacing is not the model's, saved as NIfTI and as a DICOM series."""
    from medimg.phantoms.abdomen import abdomen_ct_case

    tmp = tmp_path_factory.mktemp("order")
    case = abdomen_ct_case(
        0, spacing=(3.3, 3.3, 4.4), fov_mm=145.0, length_mm=70.0, centre_z_mm=-90.0, phase="portal"
    )  # 44 x 44 x 16, RAS+
    affine = np.diag([-3.3, 3.3, 4.4, 1.0])
    affine[:3, 3] = (100.0, -90.0, -40.0)
    # x reversed in the data and in the header: the anatomy stays (liver on the right)
    image = Image(np.round(case.image.array[:, ::-1]), affine, modality="CT")
    return save(image, tmp / "ct.nii.gz"), save(image, tmp / "series")


def test_nifti_and_dicom_series_give_the_same_labels(scan, tmp_path):
    nifti, series = scan
    a, b = load(nifti), load(series)
    assert a.affine[2, 2] > 0 > b.affine[2, 2]  # the series loads with its slices reversed
    assert np.array_equal(a.canonical().array, b.canonical().array)
    out_a, out_b = tmp_path / "a.nii.gz", tmp_path / "b"
    assert main(["segment", "predict", str(nifti), str(out_a), "--no-mirror"]) == 0
    assert main(["segment", "predict", str(series), str(out_b), "--no-mirror"]) == 0
    la = load(out_a, is_label=True)
    lb = load(out_b / "series.nii.gz", is_label=True)
    assert np.allclose(la.affine, a.affine) and np.allclose(lb.affine, b.affine, atol=1e-4)
    ca, cb = la.canonical(), lb.canonical()
    assert np.allclose(ca.affine, cb.affine, atol=1e-4)
    assert set(np.unique(ca.array)) >= {0, 1}  # the model found organs
    assert np.array_equal(ca.array, cb.array)

    seg = pydicom.dcmread(out_b / "series_seg.dcm")
    assert "segment default" in seg.SeriesDescription and "sha1:" in seg.SeriesDescription
    algo = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert "segment default" in algo.AlgorithmName and algo.AlgorithmVersion.startswith("sha1:")


@pytest.mark.parametrize("flips", list(itertools.product([1, -1], repeat=3)))
def test_reorienting_back_inverts_canonical(flips):
    rng = np.random.default_rng(0)
    perm = [2, 0, 1] if flips[0] < 0 else [0, 1, 2]
    affine = np.eye(4)
    affine[:3, :3] = np.diag(np.array(flips) * [1.0, 2.0, 3.0])[:, perm]
    image = Image(rng.integers(0, 9, (1, 4, 5, 6)).astype(np.uint8), affine, is_label=True)
    canon = image.canonical()
    assert np.array_equal(_reorient_like(canon.array, image), image.array)
