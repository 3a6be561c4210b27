"""Resampling to a spacing and back: geometry, round trips, chunking."""

from __future__ import annotations

import numpy as np
import pytest

from medimg.errors import InputError
from medimg.io.image import Image
from medimg.metrics.segmentation import dice
from medimg.tasks.segment.resample import (
    resample_labels_like,
    resample_to_spacing,
    resampled_shape,
)


def _oblique_affine(spacing: tuple[float, float, float]) -> np.ndarray:
    """A rotated, translated grid (as from a tilted acquisition) with the given spacing."""
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rot * np.asarray(spacing)
    affine[:3, 3] = (-12.5, 30.0, 7.25)
    return affine


def _ellipsoids(shape: tuple[int, ...]) -> np.ndarray:
    idx = np.indices(shape, dtype=np.float64)
    c = [(n - 1) / 2 for n in shape]
    r = sum(((i - ci) / (0.35 * n)) ** 2 for i, ci, n in zip(idx, c, shape))
    labels = (r < 1).astype(np.uint8)
    labels[(r < 0.35)] = 2
    return labels


def test_linear_intensities_land_at_the_right_world_positions() -> None:
    # f(world) is linear, so linear interpolation reproduces it exactly inside the old grid
    src = Image(np.zeros((1, 17, 14, 9), np.float32), _oblique_affine((0.8, 0.9, 3.0)))
    world = src.voxel_to_world(np.moveaxis(np.indices(src.spatial_shape), 0, -1))
    f = lambda w: 0.5 * w[..., 0] - 0.2 * w[..., 1] + 0.1 * w[..., 2]  # noqa: E731
    src = src.with_array(f(world)[None].astype(np.float32))
    out = resample_to_spacing(src, (1.3, 1.3, 1.3), order=1)
    assert out.spatial_shape == resampled_shape((17, 14, 9), (0.8, 0.9, 3.0), (1.3,) * 3)
    assert out.spatial_shape == (10, 10, 21)
    assert np.allclose(out.spacing, (1.3, 1.3, 1.3)) and np.allclose(out.origin, src.origin)
    assert np.allclose(out.direction, src.direction)
    ijk = np.moveaxis(np.indices(out.spatial_shape), 0, -1)
    at = src.world_to_voxel(out.voxel_to_world(ijk))
    inside = np.all((at >= -1e-9) & (at <= np.array([16, 13, 8]) + 1e-9), axis=-1)
    assert inside.sum() > 500
    expected = f(out.voxel_to_world(ijk))
    assert out.array.dtype == np.float32
    assert np.abs(out.array[0] - expected)[inside].max() < 1e-3


def test_cubic_is_the_default_for_images_and_keeps_channels() -> None:
    rng = np.random.default_rng(0)
    img = Image(rng.standard_normal((2, 11, 9, 5)).astype(np.float32), np.diag([1, 1, 2.5, 1]))
    out = resample_to_spacing(img, (1.0, 1.0, 2.5))  # same spacing: an identity resample
    assert out.num_channels == 2 and np.allclose(out.array, img.array, atol=1e-5)
    assert np.array_equal(out.affine, img.affine)


def test_label_round_trip_recovers_grid_exactly_and_labels_closely() -> None:
    affine = _oblique_affine((0.7, 0.7, 2.5))
    labels = Image(_ellipsoids((41, 37, 15))[None], affine, is_label=True)
    coarse = resample_to_spacing(labels, (1.2, 1.2, 1.2))  # order 0 for labels
    assert coarse.is_label and coarse.array.dtype == np.uint8
    assert set(np.unique(coarse.array)) == {0, 1, 2}
    back = resample_labels_like(coarse, labels)
    assert np.array_equal(back.affine, labels.affine) and back.spatial_shape == (41, 37, 15)
    for lab in (1, 2):
        assert dice(back.array[0] == lab, labels.array[0] == lab) > 0.9
    # the inverse spacing change gives back the affine up to rounding
    again = resample_to_spacing(coarse, (0.7, 0.7, 2.5))
    assert np.allclose(again.affine, affine, atol=1e-12, rtol=0)


def test_probabilities_back_to_the_original_grid_by_slabs() -> None:
    labels = Image(_ellipsoids((33, 29, 12))[None], np.diag([0.8, 0.8, 3.0, 1.0]), is_label=True)
    onehot = np.stack([labels.array[0] == k for k in range(3)]).astype(np.float32)
    probs = resample_to_spacing(labels.with_array(onehot, is_label=False), (1.5, 1.5, 1.5), order=1)
    assert probs.num_channels == 3 and probs.array.dtype == np.float32
    whole = resample_labels_like(probs, labels)
    sliced = resample_labels_like(probs, labels, max_slab_mib=0.01)  # one slice per slab
    assert whole.array.dtype == np.uint8 and np.array_equal(whole.array, sliced.array)
    assert np.array_equal(whole.affine, labels.affine)
    nearest = resample_labels_like(resample_to_spacing(labels, (1.5, 1.5, 1.5)), labels)
    for lab in (1, 2):
        d_prob = dice(whole.array[0] == lab, labels.array[0] == lab)
        assert d_prob > 0.93
        assert d_prob >= dice(nearest.array[0] == lab, labels.array[0] == lab) - 0.01


def test_2d_images_and_chunking_agree() -> None:
    rng = np.random.default_rng(1)
    img = Image(rng.random((1, 23, 19)).astype(np.float32), np.diag([0.6, 1.7, 1.0, 1.0]))
    whole = resample_to_spacing(img, (1.0, 1.0), order=3)
    sliced = resample_to_spacing(img, (1.0, 1.0), order=3, max_slab_mib=1e-4)
    assert whole.spatial_shape == (14, 32)
    assert np.array_equal(whole.array, sliced.array)


def test_bad_arguments() -> None:
    labels = Image(np.zeros((1, 4, 5, 6), np.uint8), is_label=True)
    with pytest.raises(InputError, match="nearest neighbour"):
        resample_to_spacing(labels, (2, 2, 2), order=1)
    with pytest.raises(InputError, match="spacing"):
        resample_to_spacing(labels, (2, 2))
    with pytest.raises(InputError, match="order"):
        resample_to_spacing(Image(np.zeros((1, 4, 5, 6), np.float32)), (2, 2, 2), order=2)
    with pytest.raises(InputError, match="Image"):
        resample_labels_like(labels.array, labels)  # type: ignore[arg-type]
