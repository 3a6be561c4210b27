"""The realistic abdomen generator: anatomy where it belongs, contrast phases, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from medimg.errors import InputError
from medimg.phantoms.abdomen import PHASE_HU, abdomen_ct_case, abdomen_tissues
from medimg.phantoms.abdomen_shapes import LABEL_OF, T
from medimg.phantoms.segmentation import make_case

# coarse grid, whole abdomen in view (z from -280 to +120 mm around the right dome)
FULL = {"spacing": (8.0, 8.0, 10.0), "fov_mm": 450.0, "length_mm": 400.0, "centre_z_mm": -80.0}


def _centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    idx = np.argwhere(mask).mean(axis=0)
    return affine[:3, :3] @ idx + affine[:3, 3]


@pytest.mark.parametrize("seed", [0, 1, 2, 7])
def test_organs_sit_where_anatomy_puts_them(seed):
    from scipy import ndimage

    case = abdomen_ct_case(seed, **FULL)
    _, _, marks = abdomen_tissues(seed, FULL["spacing"], FULL["fov_mm"], FULL["length_mm"],
                                  FULL["centre_z_mm"])  # fmt: skip
    lab, aff = case.labels.array[0], case.labels.affine
    y_spine = marks["y_vb"]
    liver, spleen = _centroid(lab == 1, aff), _centroid(lab == 2, aff)
    # RAS+: +x is the patient's right; the image is centred near the midline (x = 0)
    assert liver[0] > 20, "liver in the right upper quadrant"
    assert spleen[0] < -40 and spleen[1] < y_spine + 30, "spleen left and posterior"
    left_lobe = (lab == 1) & (np.arange(lab.shape[0])[:, None, None] * aff[0, 0] + aff[0, 3] < -15)
    assert left_lobe.sum() > 0, "the left lobe crosses the midline"
    comps, n = ndimage.label(lab == 3)
    sizes = ndimage.sum(lab == 3, comps, range(1, n + 1))
    assert n >= 2
    big = np.argsort(sizes)[::-1][:2] + 1
    kid = sorted((_centroid(comps == k, aff) for k in big), key=lambda c: c[0])
    left_k, right_k = kid[0], kid[1]
    assert left_k[0] < -25 and right_k[0] > 25, "one kidney each side of the spine"
    for k in (left_k, right_k):
        assert abs(k[0]) < 110 and abs(k[1] - y_spine) < 40, "beside the spine, retroperitoneal"
    assert right_k[2] < left_k[2], "the right kidney lower than the left"
    assert spleen[2] > left_k[2] and liver[2] > right_k[2], "spleen and liver above the kidneys"


def test_phases_change_hu_as_stated():
    tis, _, _ = abdomen_tissues(3, *FULL.values())
    quiet = {"noise_hu": 0.0, "blur_mm": 0.01, "sharpness": 0.0}
    med = {}
    for phase in PHASE_HU:
        hu = abdomen_ct_case(3, phase=phase, **FULL, **quiet).image.array[0]
        med[phase] = {t: float(np.median(hu[tis == t])) for t in
                      (T.LIVER, T.SPLEEN, T.KIDNEY_CORTEX, T.KIDNEY_MEDULLA, T.AORTA)}  # fmt: skip
        for t, v in med[phase].items():
            lo, hi = PHASE_HU[phase][t]
            pad = 0.1 * abs(lo + hi) / 2 + 25  # the stated widening + texture/edge blur
            assert lo - pad <= v <= hi + pad, (phase, t, v)
    un, art, pv = med["unenhanced"], med["arterial"], med["portal"]
    assert un[T.KIDNEY_CORTEX] < 60 and art[T.KIDNEY_CORTEX] > 130
    # the cortex range starts 16 HU above the top of the medulla range (corticomedullary phase)
    assert art[T.KIDNEY_CORTEX] > art[T.KIDNEY_MEDULLA] + 10, "corticomedullary difference"
    assert pv[T.LIVER] > un[T.LIVER] + 25 and art[T.AORTA] > pv[T.AORTA] > un[T.AORTA] + 80


def test_same_seed_same_case_and_labels_follow_tissues():
    small = {**FULL, "spacing": (10.0, 10.0, 12.0)}
    a = abdomen_ct_case(5, **small)
    b = abdomen_ct_case(5, **small)
    c = abdomen_ct_case(6, **small)
    assert np.array_equal(a.image.array, b.image.array)
    assert np.array_equal(a.labels.array, b.labels.array)
    assert not np.array_equal(a.labels.array, c.labels.array)
    assert set(np.unique(a.labels.array)) == {0, 1, 2, 3}
    assert a.image.modality == "CT" and a.image.orientation == "RAS"
    assert LABEL_OF[T.HEPATIC_VESSEL] == 1 and LABEL_OF[T.VFAT] == 0


def test_random_field_of_view_cuts_organs_and_varies_size():
    labels = [abdomen_ct_case(s, spacing=(10.0, 10.0, 12.0)).labels.array[0] for s in range(5)]
    assert len({lab.shape for lab in labels}) > 3  # random in-plane and z extent
    cut = sum(bool(lab[..., 0].any() or lab[..., -1].any()) for lab in labels)
    assert cut >= 1, "some organ is cut by the top or bottom slice"


def test_abdomen_kind_and_bad_options():
    case = make_case("abdomen", 1, spacing=(8.0, 8.0, 10.0))
    assert case.names[3] == "kidney"
    with pytest.raises(InputError, match="phase"):
        abdomen_ct_case(0, phase="delayed", spacing=(8.0, 8.0, 10.0))
    with pytest.raises(InputError, match="kind"):
        make_case("pelvis", 0)
