"""Chest radiographs projected from the 3D thorax: anatomy where it belongs, nodules where
placed, PA vs AP geometry."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from medimg.phantoms.chest_xray import NoduleSpec, chest_radiograph, thorax_volume
from medimg.physics.xray import hu_to_mu

COARSE = dict(size=64, voxel_mm=8.0)


@pytest.fixture(scope="module")
def clean():
    return chest_radiograph(3, **COARSE, noise=False)


def test_the_default_film_is_at_least_512_pixels():
    assert inspect.signature(chest_radiograph).parameters["size"].default >= 512


def test_lungs_are_darker_than_mediastinum_and_abdomen(clean):
    log, lung = clean.log, clean.lung
    assert 0.15 < lung.mean() < 0.6
    centre = log[28:36, 20:40].mean()  # spine and mediastinum
    below = log[20:44, 58:62].mean()  # the abdomen at the bottom of the film
    # (scatter from the lungs fills the dense abdomen in: its excess shrinks to ~0.5-1)
    assert log[lung].mean() < centre - 0.5 and log[lung].mean() < below - 0.3


def test_shoulder_girdle_bones_lie_above_the_lungs_on_both_sides():
    hu, _, meta = thorax_volume(3, voxel_mm=8.0)
    # RAS+ index order: the top slices hold the shoulders; left and right halves both get bone
    top = hu[..., -int(60 / 8) :]
    half = hu.shape[0] // 2
    assert (top[:half] >= 700).sum() > 3 and (top[half:] >= 700).sum() > 3
    assert meta["half_width_mm"] > 100


def test_a_placed_nodule_appears_where_placed(clean):
    c = tuple(float(i) for i in np.argwhere(clean.lung)[len(np.argwhere(clean.lung)) // 2])
    with_nodule = chest_radiograph(3, **COARSE, noise=False, nodules=[NoduleSpec(c, 25.0)])
    diff = with_nodule.log - clean.log
    peak = np.unravel_index(np.argmax(diff), diff.shape)
    assert np.hypot(peak[0] - c[0], peak[1] - c[1]) <= 1.5
    mu = float(hu_to_mu(torch.tensor(40.0)) - hu_to_mu(torch.tensor(-850.0)))
    # scatter and blur lower the contrast: between a third and all of mu * diameter
    assert mu * 25.0 / 3 < diff.max() <= mu * 25.0 * 1.3


def test_random_nodules_sit_in_the_lungs():
    film = chest_radiograph(4, **COARSE, nodules=3, noise=False)
    assert len(film.nodules) == 3
    for n in film.nodules:
        assert film.lung[int(n.center[0]), int(n.center[1])] and 6 <= n.diameter_mm <= 30


def test_ribs_are_continuous_bands_from_spine_to_wall():
    """Each rib is one connected tube from beside the spine round the lateral chest wall,
    lower at its anterior end than at the spine (not dots, as the CT phantom's cross-sections
    project)."""
    from scipy import ndimage

    from medimg.phantoms.chest_xray import _ribs

    axes = [np.arange(-160, 161, 4.0), np.arange(-120, 121, 4.0), np.arange(-20, 381, 4.0)]
    uvz = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
    hu = np.full(uvz.shape[:3], -1000.0)
    _ribs(hu, uvz, 160.0, 110.0, np.random.default_rng(0))
    labels, n = ndimage.label(hu > 0)
    assert n == 22  # eleven a side
    for k in range(1, n + 1):
        pts = uvz[labels == k]
        u = np.abs(pts[:, 0])
        assert u.min() < 40 and u.max() > 70  # from the spine out round the wall
        back, front = pts[pts[:, 1].argmax()], pts[pts[:, 1].argmin()]  # v: posterior +
        assert front[2] > back[2] + 40  # the anterior end hangs lower (z: depth)
