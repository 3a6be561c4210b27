"""CT phantoms: HU ranges per tissue, labels consistent with HU, nodules, geometry, seeds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medimg.errors import InputError
from medimg.phantoms.ct import LABELS, CTPhantom, body_phantom, shepp_logan_hu

# label -> allowed range of the median HU inside it
MEDIAN_HU = {"background": (-1001, -999), "fat": (-130, -70), "muscle": (30, 70),
             "lung": (-920, -780), "vessel": (15, 70), "bone": (150, 1100), "heart": (25, 55),
             "liver": (45, 75), "spleen": (35, 65), "kidney": (20, 50), "airway": (-1001, -900),
             "soft_tissue": (0, 100)}  # fmt: skip


@pytest.fixture(scope="module")
def thorax() -> CTPhantom:
    return body_phantom((128, 128), (3.0, 3.0), region="thorax", n_nodules=3, seed=1)


@pytest.fixture(scope="module")
def abdomen() -> CTPhantom:
    return body_phantom((128, 128), (3.0, 3.0), region="abdomen", seed=1)


@pytest.fixture(scope="module")
def volume() -> CTPhantom:
    return body_phantom((20, 96, 96), (10.0, 4.0, 4.0), z_center=170.0, n_nodules=3, seed=2)


def test_shepp_logan_in_hu() -> None:
    hu = shepp_logan_hu(64)
    assert hu.shape == (64, 64) and hu.dtype == np.float32
    assert hu.min() >= -1000.5 and 900 < hu.max() <= 1000.5
    assert abs(float(np.median(hu[(hu > -600) & (hu < 500)]))) < 30  # brain is water-like
    assert float(hu[0, 0]) == -1000.0


@pytest.mark.parametrize("name", ["thorax", "abdomen", "volume"])
def test_tissue_hu_ranges_and_labels(name: str, request: pytest.FixtureRequest) -> None:
    ph = request.getfixturevalue(name)
    assert ph.hu.dtype == np.float32 and ph.labels.dtype == np.uint8
    assert ph.hu.shape == ph.labels.shape and ph.hu.min() >= -1010 and ph.hu.max() < 1400
    present = {LABELS[i] for i in np.unique(ph.labels)}
    expected = {"thorax": {"lung", "heart", "bone", "vessel", "fat", "muscle"},
                "abdomen": {"liver", "kidney", "bone", "fat", "muscle", "vessel"},
                "volume": {"lung", "heart", "liver", "bone", "airway"}}[name]  # fmt: skip
    assert expected <= present, expected - present
    for label, (lo, hi) in MEDIAN_HU.items():  # interiors: edges are partial-volume mixtures
        inside = ndimage.binary_erosion(ph.labels == {v: k for k, v in LABELS.items()}[label])
        if inside.sum() > 10:
            med = float(np.median(ph.hu[inside]))
            assert lo <= med <= hi, (label, med)
    rim = ndimage.binary_dilation(ph.labels > 0) & (ph.labels == 0)
    assert np.mean(ph.hu[rim] > -950) > 0.2  # a partial-volume skin edge, not a hard step


def test_texture_is_not_flat(thorax: CTPhantom, abdomen: CTPhantom) -> None:
    for ph, tissue in ((thorax, 3), (abdomen, 8), (abdomen, 1)):  # lung, liver, fat
        core = ndimage.binary_erosion(ph.labels == tissue, iterations=2)
        assert 4 < float(ph.hu[core].std()) < 120


@pytest.mark.parametrize("name", ["thorax", "volume"])
def test_nodules(name: str, request: pytest.FixtureRequest) -> None:
    ph = request.getfixturevalue(name)
    assert len(ph.nodules) >= 1
    ids = {v: k for k, v in LABELS.items()}
    for n in ph.nodules:
        assert 3.0 <= n.diameter_mm <= 30.0 and n.kind in ("solid", "ground_glass")
        assert ph.labels[n.center_voxel] == ids["nodule"]
        world = ph.affine[:3, :3] @ np.r_[n.center_voxel, 0][:3] + ph.affine[:3, 3]
        np.testing.assert_allclose(world, n.center_mm)
        # size in the label map matches the diameter: area (2D) or volume (3D) of the component
        if name == "thorax" and n.diameter_mm > 4 * ph.spacing[0]:
            comp, _ = ndimage.label(ph.labels == ids["nodule"])
            area = (comp == comp[n.center_voxel]).sum() * 9.0
            assert 0.5 < area / (np.pi * n.diameter_mm**2 / 4) < 1.6


def test_small_nodule_range() -> None:
    ph = body_phantom((96, 96), (2.0, 2.0), n_nodules=4, nodule_diameter_mm=(3, 6), seed=3)
    assert ph.nodules and all(3 <= n.diameter_mm <= 6 for n in ph.nodules)


def test_deterministic_under_seed(thorax: CTPhantom) -> None:
    again = body_phantom((128, 128), (3.0, 3.0), region="thorax", n_nodules=3, seed=1)
    assert np.array_equal(again.hu, thorax.hu) and np.array_equal(again.labels, thorax.labels)
    assert again.nodules == thorax.nodules
    other = body_phantom((128, 128), (3.0, 3.0), region="thorax", n_nodules=3, seed=2)
    assert not np.array_equal(other.hu, thorax.hu)


def test_spacing_sets_physical_size() -> None:
    fine = body_phantom((128, 128), (2.0, 2.0), n_nodules=0, seed=0)
    coarse = body_phantom((64, 64), (4.0, 4.0), n_nodules=0, seed=0)
    area = [(ph.labels > 0).sum() * ph.spacing[0] ** 2 for ph in (fine, coarse)]
    assert abs(area[0] / area[1] - 1) < 0.03  # same body, in mm^2


def test_images_and_affine(volume: CTPhantom) -> None:
    hu, lab = volume.to_images()
    assert hu.modality == "CT" and lab.is_label and hu.spatial_shape == (96, 96, 20)
    assert np.allclose(hu.spacing, [4.0, 4.0, 10.0])
    assert hu.orientation == "RAS"  # the project's (C, X, Y, Z) convention
    # same voxels at the same world points as the phantom's own (slice, row, col) affine
    z, r, c = 3, 40, 17
    world = volume.affine[:3, :3] @ [z, r, c] + volume.affine[:3, 3]
    ijk = np.rint(hu.world_to_voxel(world)).astype(int)
    assert hu.array[0][tuple(ijk)] == volume.hu[z, r, c]
    assert lab.array[0][tuple(ijk)] == volume.labels[z, r, c]


@pytest.mark.parametrize(
    "kwargs",
    [{"shape": (8, 8, 8, 8)}, {"spacing": (1.0, 2.0)}, {"region": "head"},
     {"nodule_diameter_mm": (1.0, 10.0)}, {"nodule_diameter_mm": (5.0, 40.0)}],
)  # fmt: skip
def test_bad_arguments(kwargs: dict) -> None:
    args = {"shape": (32, 32), "spacing": (4.0, 4.0), **kwargs}
    if len(args["shape"]) == 4:
        args["spacing"] = (4.0,) * 4
    with pytest.raises(InputError):
        body_phantom(**args)


def test_volume_round_trips_through_nifti(volume: CTPhantom, tmp_path) -> None:
    from medimg.io.api import load, save

    hu, lab = volume.to_images()
    back = load(save(hu, tmp_path / "ct.nii.gz"))
    np.testing.assert_allclose(back.array, hu.array)
    np.testing.assert_allclose(back.affine, hu.affine, atol=1e-5)
    labels = load(save(lab, tmp_path / "labels.nii.gz"), is_label=True)
    assert np.array_equal(labels.array, lab.array)
    assert np.isin(np.unique(volume.labels), np.unique(labels.array)).all()
