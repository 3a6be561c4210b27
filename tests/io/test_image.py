"""The Image type: derived geometry, validation, and lossless conversions to MONAI/ITK/nibabel."""

from __future__ import annotations

import numpy as np
import pytest

from medimg.errors import InputError
from medimg.io import LPS_TO_RAS, Image


def _oblique(spacing=(0.7, 1.3, 2.9)) -> np.ndarray:
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    a = np.eye(4)
    a[:3, :3] = q @ np.diag(spacing)
    a[:3, 3] = [12.5, -40.0, 7.25]
    return a


@pytest.fixture
def image() -> Image:
    data = np.random.default_rng(0).normal(size=(2, 7, 9, 5)).astype(np.float32)
    return Image(data, _oblique(), modality="mr", meta={"series_uid": "1.2.3"})


def test_derived_geometry(image: Image) -> None:
    assert image.spacing == pytest.approx((0.7, 1.3, 2.9))
    assert image.origin == pytest.approx((12.5, -40.0, 7.25))
    assert np.allclose(image.direction.T @ image.direction, np.eye(3), atol=1e-12)
    assert image.modality == "MR" and image.num_channels == 2 and image.spatial_shape == (7, 9, 5)
    assert len(image.orientation) == 3


def test_repr_answers_first_questions(image: Image) -> None:
    text = repr(image)
    for part in ("(2, 7, 9, 5)", "0.70, 1.30, 2.90", "float32", "MiB", "MR", "intensity"):
        assert part in text


def test_voxel_world_round_trip(image: Image) -> None:
    ijk = np.array([[0, 0, 0], [6, 8, 4], [1.5, 2.25, 3.0]])
    world = image.voxel_to_world(ijk)
    assert np.allclose(world[0], image.origin)
    assert np.allclose(image.world_to_voxel(world), ijk)


@pytest.mark.parametrize(
    ("array", "affine", "match"),
    [
        (np.zeros((4, 5)), None, "channel-first"),
        (np.zeros((1, 4, 5, 6, 7)), None, "channel-first"),
        (np.zeros((1, 0, 5, 6)), None, "empty axis"),
        (np.zeros((1, 4, 5, 6)), np.eye(3), "4x4"),
        (np.zeros((1, 4, 5, 6)), np.diag([1.0, 1.0, 0.0, 1.0]), "singular"),
        (np.zeros((1, 4, 5, 6)), np.full((4, 4), np.nan), "NaN"),
    ],
)
def test_invalid_construction_is_rejected(array, affine, match) -> None:
    with pytest.raises(InputError, match=match):
        Image(array, affine)


def test_check_finite_names_the_first_bad_voxel() -> None:
    data = np.zeros((1, 4, 5, 6), np.float32)
    data[0, 2, 3, 1] = np.nan
    with pytest.raises(InputError, match=r"1 NaN/Inf.*\(0, 2, 3, 1\)"):
        Image(data).check_finite("scan.nii")
    Image(np.zeros((1, 4, 5, 6), np.int16)).check_finite()  # integers are always finite


def test_sitk_round_trip_is_exact_and_lps(image: Image) -> None:
    single = image.with_array(image.array[:1])
    itk = single.to_sitk()
    assert itk.GetSize() == (7, 9, 5)
    # ITK's physical point of voxel (i, j, k) is our world point with x and y negated (LPS).
    idx = (6, 1, 3)
    lps = np.array(itk.TransformIndexToPhysicalPoint(idx))
    assert np.allclose(lps, (LPS_TO_RAS[:3, :3] @ single.voxel_to_world(idx)))
    assert itk.GetPixel(idx) == pytest.approx(float(single.array[0, 6, 1, 3]))
    for source in (single, image):  # scalar and vector (multi-channel) images
        back = Image.from_sitk(source.to_sitk())
        assert np.array_equal(back.array, source.array)
        assert np.allclose(back.affine, source.affine, atol=1e-10)


def test_nibabel_round_trip(image: Image) -> None:
    for source in (image, image.with_array(image.array[:1])):
        back = Image.from_nibabel(source.to_nibabel())
        assert np.array_equal(back.array, source.array)
        assert np.allclose(back.affine, source.affine, atol=1e-6)


def test_metatensor_round_trip_keeps_memory_and_metadata(image: Image) -> None:
    mt = image.to_metatensor()
    assert tuple(mt.shape) == image.array.shape
    assert np.allclose(mt.affine.numpy(), image.affine)
    back = Image.from_metatensor(mt)
    assert np.array_equal(back.array, image.array)
    assert back.modality == "MR" and np.allclose(back.affine, image.affine)


def test_metatensor_in_lps_space_is_converted() -> None:
    import torch
    from monai.data import MetaTensor

    lps = np.diag([2.0, 3.0, 4.0, 1.0])
    mt = MetaTensor(torch.zeros(1, 3, 3, 3), affine=torch.as_tensor(lps), meta={"space": "LPS"})
    assert np.allclose(Image.from_metatensor(mt).affine, LPS_TO_RAS @ lps)


def test_canonical_preserves_world_positions(image: Image) -> None:
    can = image.canonical()
    assert can.orientation == "RAS"
    # the voxel holding a given value sits at the same world point before and after
    src = (5, 2, 3)
    value = image.array[0][src]
    dst = tuple(np.argwhere(can.array[0] == value)[0])
    assert np.allclose(image.voxel_to_world(src), can.voxel_to_world(dst))


def test_with_array_keeps_geometry_and_checks_shape(image: Image) -> None:
    labels = image.with_array(np.zeros((1, 7, 9, 5), np.uint8), is_label=True)
    assert labels.is_label and np.array_equal(labels.affine, image.affine)
    assert labels.affine is not image.affine
    with pytest.raises(InputError, match="same spatial shape"):
        image.with_array(np.zeros((1, 7, 9, 4)))


def test_two_dimensional_images() -> None:
    img = Image(np.arange(20, dtype=np.float32).reshape(1, 4, 5), np.diag([0.5, 0.8, 1.0, 1.0]))
    assert img.spatial_ndim == 2 and img.spacing == pytest.approx((0.5, 0.8))
    back = Image.from_sitk(img.to_sitk())
    assert np.array_equal(back.array, img.array) and np.allclose(back.affine, img.affine)
