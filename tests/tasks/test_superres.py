"""Super-resolution: the degradation model, its geometry, and the interpolation baselines."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medimg.errors import InputError
from medimg.io.image import Image
from medimg.tasks.superres.baselines import cubic_upsample, sinc_upsample
from medimg.tasks.superres.degrade import crop_to_multiple, degrade, thick_affine, thin_affine
from medimg.tasks.superres.predict import predict_volume, slice_axis


def _extent(img: Image) -> np.ndarray:
    """World positions of the outer voxel corners (edges, not centres)."""
    n = np.asarray(img.spatial_shape, float)
    return np.stack([img.voxel_to_world(-0.5 * np.ones(3)), img.voxel_to_world(n - 0.5)])


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_boxcar_is_the_mean_of_the_thin_slices_a_thick_one_covers(factor) -> None:
    v = np.random.default_rng(0).random((3, 4, 4 * factor)).astype(np.float32)
    thick = degrade(v, 2, factor, "boxcar")
    assert thick.shape == (3, 4, 4)
    np.testing.assert_allclose(thick[..., 1], v[..., factor : 2 * factor].mean(-1), atol=1e-6)


def test_gaussian_profile_centres_each_thick_slice_on_its_thin_slices() -> None:
    v = np.zeros((2, 2, 16), np.float32)
    v[..., 9] = 1.0  # inside thick slice 2 (thin 8..11) of a 4x degradation
    thick = degrade(v, 2, 4)
    assert int(np.argmax(thick[0, 0])) == 2
    np.testing.assert_allclose(degrade(np.ones((2, 3, 8)), 2, 4), 1.0, atol=1e-6)  # no gain


def test_thick_and_thin_affines_keep_the_world_extent_and_spacing() -> None:
    affine = np.array([[0, 0, -1.0, 20], [0.9, 0, 0, -5], [0, 1.1, 0, 3], [0, 0, 0, 1]])
    thin = Image(np.zeros((1, 5, 6, 12), np.float32), affine)
    thick = Image(np.zeros((1, 5, 6, 3), np.float32), thick_affine(affine, 2, 4))
    assert np.allclose(thick.spacing, (0.9, 1.1, 4.0))
    np.testing.assert_allclose(_extent(thick), _extent(thin), atol=1e-9)
    np.testing.assert_allclose(thin_affine(thick.affine, 2, 4), affine, atol=1e-12)


def test_predict_volume_returns_the_thin_grid_over_the_same_world_extent() -> None:
    affine = np.diag([0.8, 0.8, 3.2, 1.0])
    affine[:3, 3] = (-10, 4, 30)
    thick = Image(np.random.default_rng(1).random((1, 6, 5, 4)).astype(np.float32), affine,
                  modality="CT")  # fmt: skip
    assert slice_axis(thick) == 2
    out = predict_volume(thick, method="cubic")  # factor from the spacing: 3.2 / 0.8 = 4
    assert out.spatial_shape == (6, 5, 16) and out.modality == "CT"
    np.testing.assert_allclose(out.spacing, (0.8, 0.8, 0.8), atol=1e-9)
    np.testing.assert_allclose(_extent(out), _extent(thick), atol=1e-9)


def test_cubic_matches_scipy_spline_at_the_thin_voxel_centres() -> None:
    thick = np.random.default_rng(2).random((3, 4, 5)).astype(np.float32)
    out = cubic_upsample(thick, 2, 4)
    z = (np.arange(20) - 1.5) / 4  # thin centre j sits at thick index (j - (f - 1) / 2) / f
    coords = np.meshgrid(np.arange(3), np.arange(4), z, indexing="ij")
    ref = ndimage.map_coordinates(thick, coords, order=3, mode="nearest")
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_sinc_is_exact_for_a_band_limited_profile_and_keeps_constants() -> None:
    n, f = 12, 4
    k = 3  # a cosine of the mirror-extended grid, below the thick grid's Nyquist frequency
    thick = np.cos(np.pi * k * (2 * np.arange(n) + 1) / (2 * n))[None, None]
    thin = np.cos(np.pi * k * (2 * np.arange(n * f) + 1) / (2 * n * f))
    np.testing.assert_allclose(sinc_upsample(thick, 2, f)[0, 0], thin, atol=1e-6)
    np.testing.assert_allclose(sinc_upsample(np.full((2, 2, 5), 7.0), 2, f), 7.0, atol=1e-5)


def test_crop_keeps_the_first_voxel_and_bad_factors_are_refused() -> None:
    v = np.arange(2 * 2 * 10, dtype=np.float32).reshape(2, 2, 10)
    assert crop_to_multiple(v, 2, 4).shape == (2, 2, 8)
    with pytest.raises(InputError, match="factor 1"):
        degrade(v, 2, 1)
    with pytest.raises(InputError, match="multiple"):
        degrade(v, 2, 4)
    with pytest.raises(InputError, match="3D"):
        degrade(v[0], 1, 2)
