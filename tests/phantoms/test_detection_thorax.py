"""Varied thorax CTs with typed nodules: each type where it is said to be, densities in their HU
ranges, margins, thorax variety (size, coverage, spacing, noise, orientation, vessel tree)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medimg.errors import InputError
from medimg.phantoms.nodules import NODULE_TYPES, NoduleSpec, draw_spec, paint_nodule
from medimg.phantoms.thorax import FISSURE, LUNG, VESSEL, thorax_ct_case

COARSE = dict(scale=0.6, in_plane_mm=2.0, slice_mm=2.5, orientation="RAS")
WALL = (1, 2, 6, 7, 12)


@pytest.fixture(scope="module")
def case():
    return thorax_ct_case(5, **COARSE, noise_hu=10.0, sharpness=1.0, full_lungs=1.0,
                          n_nodules=(16, 16), diameter_mm=(6.0, 30.0))  # fmt: skip


def _voxel(image, finding) -> tuple[int, int, int]:
    v = np.round(image.world_to_voxel(np.asarray(finding.center_ras)[None])[0]).astype(int)
    return tuple(int(x) for x in v)


def _ball(image, finding, fraction: float) -> np.ndarray:
    """Boolean mask of the voxels within ``fraction`` of the nodule radius of its centre."""
    g = np.stack(np.meshgrid(*[np.arange(n) for n in image.spatial_shape], indexing="ij"), -1)
    world = g @ image.affine[:3, :3].T + image.affine[:3, 3]
    return np.linalg.norm(world - finding.center_ras, axis=-1) <= fraction * finding.diameter_mm / 2


def test_every_type_is_drawn_and_recorded(case):
    kinds = {f.kind for f in case.nodules}
    assert kinds >= set(NODULE_TYPES) - {"perifissural"} and len(kinds) >= 6
    assert all(3.0 <= f.diameter_mm <= 30.0 for f in case.nodules)
    assert all(f.kind == "calcification" and f.diameter_mm < 3 for f in case.excluded)


def test_each_type_is_where_it_is_said_to_be(case):
    lab = case.labels.array[0]
    for f in case.nodules:
        v = _voxel(case.labels, f)
        around = lab[tuple(slice(max(i - 1, 0), i + 2) for i in v)]
        if f.kind == "juxtapleural":  # centred on the pleura: lung and wall within one voxel
            assert np.isin(around, (LUNG, VESSEL)).any() and np.isin(around, WALL).any(), f
            share = np.isin(lab[_ball(case.labels, f, 1.0)], (LUNG, VESSEL)).mean()
            assert 0.2 < share < 0.85, (f, share)  # about half of it in the chest wall
        elif f.kind == "vessel_attached":
            assert lab[v] == VESSEL, f
        elif f.kind == "perifissural":
            assert lab[v] == FISSURE, f
        else:  # free in the lung, clear of its wall
            assert np.isin(lab[_ball(case.labels, f, 1.0)], (LUNG, VESSEL, FISSURE)).all(), f


def test_densities_lie_in_the_stated_hu_ranges(case):
    hu = case.image.array[0]
    seen = set()
    for f in case.nodules:
        core = hu[_ball(case.image, f, 0.35) | (np.arange(hu.size).reshape(hu.shape) == -1)]
        core = core if core.size else hu[_voxel(case.image, f)][None]
        mean = float(core.mean())
        if f.kind == "ground_glass":
            assert -700 <= mean <= -300, (f, mean)
        elif f.kind in ("solid", "juxtapleural", "vessel_attached", "perifissural"):
            assert -30 <= mean <= 130, (f, mean)
        elif f.kind == "calcified":
            assert mean > 200, (f, mean)
        elif f.kind == "part_solid":
            assert mean > -150, (f, mean)  # the solid core
        seen.add(f.kind)
    assert {"ground_glass", "solid", "calcified"} <= seen


def test_margins_change_the_outline():
    """Smooth stays inside its radius; spiculated reaches out; irregular varies with direction."""
    sp = np.array([0.5, 0.5, 0.5])
    dist = np.linalg.norm(np.moveaxis(np.indices((64, 64, 64)), 0, -1) - 32, axis=-1) * 0.5

    def solid(margin: str) -> np.ndarray:
        seed = {"smooth": 2, "spiculated": 1, "irregular": 0}[margin]  # draws of that margin
        spec = draw_spec(np.random.default_rng(seed), "solid", (12.0, 12.0))
        assert spec.margin == margin and (margin == "smooth") == (spec.bumps == ())
        hu = np.full((64, 64, 64), -850.0)
        paint_nodule(hu, np.array([32.0, 32.0, 32.0]), sp, spec, np.random.default_rng(0))
        return hu > -400

    assert not solid("smooth")[dist > 6.5].any()
    assert solid("spiculated")[dist > 8.0].sum() > 20  # spikes reach into the lung
    outline = solid("irregular")
    r = dist[outline & ~ndimage.binary_erosion(outline)]
    assert r.max() / r.min() > 1.3  # the radius varies with direction
    assert NoduleSpec("solid", "smooth", 5.0, 40.0).spikes == ()


def test_apex_and_base_in_view_and_the_size_varies(case):
    # the same body at 1.0x on a coarse grid that is over max_voxels: coarsened on every axis
    large = thorax_ct_case(5, scale=1.0, in_plane_mm=1.0, slice_mm=1.25, orientation="RAS",
                           max_voxels=200_000, full_lungs=1.0, n_nodules=(0, 0))  # fmt: skip
    sp = large.image.spacing
    assert np.prod(large.image.spatial_shape) <= 200_000 * 1.05 and sp[0] > 1.0
    assert sp[2] / sp[0] == pytest.approx(1.25, rel=0.02)
    widths = []
    for c in (case, large):
        lab = c.labels.array[0]  # RAS: the last axis runs inferior -> superior
        lung = (lab == LUNG).any(axis=(0, 1))
        assert not lung[:2].any() and not lung[-2:].any() and lung.sum() > 10  # whole lungs
        body = np.flatnonzero((lab > 0).any(axis=(1, 2)))
        widths.append((body[-1] - body[0]) * c.labels.spacing[0])
    assert 0.5 < widths[0] / widths[1] < 0.7  # 0.6x vs 1.0x


def test_spacing_noise_and_orientation_vary_with_the_seed():
    noise = (10.0, 35.0, 60.0)
    cases = [thorax_ct_case(s, scale=0.5, in_plane_mm=(3.0, 4.0), slice_mm=(4.0, 6.0),
                            noise_hu=n, sharpness=0.5, n_nodules=(1, 1), full_lungs=0.0)
             for s, n in zip(range(3), noise)]  # fmt: skip
    assert len({c.image.orientation for c in cases}) == 3
    stds = []
    for c in cases:
        sp = sorted(c.image.spacing)
        assert 3.0 <= sp[0] <= sp[1] <= 4.0 and 4.0 <= sp[2] <= 6.0
        hu, lab = c.image.array[0], c.labels.array[0]
        f = c.nodules[0]  # world positions hold whatever the header's axis order
        assert lab[_voxel(c.labels, f)] in (LUNG, VESSEL, FISSURE, *WALL)
        air = ndimage.binary_erosion(lab == 0, iterations=2)  # outside the body: -1000 + noise
        stds.append(float(hu[air].std()))
    assert stds[0] < stds[1] < stds[2] and stds[2] > 3 * stds[0]
    again = thorax_ct_case(0, scale=0.5, in_plane_mm=(3.0, 4.0), slice_mm=(4.0, 6.0),
                           noise_hu=10.0, sharpness=0.5, n_nodules=(1, 1), full_lungs=0.0)  # fmt: skip
    np.testing.assert_array_equal(again.image.array, cases[0].image.array)  # same seed, same case
    assert again.findings == cases[0].findings


def test_dense_vessel_tree_with_stubs_and_branch_points(case):
    kinds = [h.kind for h in case.hard_negatives]
    assert kinds.count("vessel_stub") >= 2 and kinds.count("branch_point") >= 10
    lab = case.labels.array[0]
    lung = np.isin(lab, (LUNG, VESSEL, FISSURE))
    assert (lab == VESSEL).sum() / lung.sum() > 0.03
    for h in case.hard_negatives:
        if h.kind == "vessel_stub":  # the blunt end of a thick vessel
            v = _voxel(case.labels, h)
            assert (lab[tuple(slice(max(i - 1, 0), i + 2) for i in v)] == VESSEL).any()


def test_bad_options_are_refused():
    with pytest.raises(InputError, match="unknown nodule types"):
        thorax_ct_case(0, nodule_types=("cancer",))
    with pytest.raises(InputError, match="diameter_mm"):
        thorax_ct_case(0, diameter_mm=(1.0, 40.0))
