"""The radiograph projector: exact slab attenuation, PA/AP geometry, scatter, noise, display
conventions, and nodule insertion into a log image."""

from __future__ import annotations

import math

import pytest
import torch

from medimg.errors import InputError
from medimg.physics.xray import (
    MU_WATER_PER_MM,
    Geometry,
    expose,
    from_stored,
    hu_to_mu,
    insert_nodule,
    log_image,
    nodule_line_integral,
    project,
    to_stored,
)


def _slab(mu: float = 0.02, ny: int = 20, j0: int = 5, j1: int = 15) -> torch.Tensor:
    vol = torch.zeros(12, ny, 10)
    vol[:, j0:j1] = mu
    return vol


def test_a_slab_attenuates_by_exp_minus_mu_d():
    mu, dy = 0.02, 1.5
    vol = _slab(mu)  # 10 planes of 1.5 mm: d = 15 mm
    p = project(vol, (2.0, dy, 2.0))
    counts = expose(p, (2.0, 2.0), i0=1e4, noise="none")
    ratio = counts / 1e4
    assert torch.allclose(ratio, torch.full_like(ratio, math.exp(-mu * 15.0)), rtol=1e-3, atol=0)
    assert torch.allclose(log_image(counts), torch.full_like(p, mu * 15.0), atol=1e-4)


@pytest.mark.parametrize("view", ["PA", "AP"])
def test_a_cone_beam_central_ray_crosses_the_slab_once(view):
    vol = _slab(0.02, ny=40, j0=10, j1=30)  # 20 planes of 1 mm
    p = project(vol, (1.0, 1.0, 1.0), Geometry(view=view, beam="cone", sid_mm=1000.0,
                                               detector_shape=(11, 9), pixel_mm=(0.1, 0.1)))  # fmt: skip
    assert p[5, 4] == pytest.approx(0.02 * 20.0, rel=1e-4)
    assert p[0, 4] > p[5, 4]  # oblique rays cross more of it


def test_an_inserted_feature_appears_where_placed():
    vol = torch.zeros(16, 8, 12)
    # RAS+ index order: low i = towards the patient's left, shown on the image's right (high
    # u); high k = superior, shown at the top (low v)
    vol[3, 4, 9] = 0.05
    p = project(vol, (1.0, 1.0, 1.0))
    u, v = divmod(int(torch.argmax(p)), p.shape[1])
    assert (u, v) == (16 - 1 - 3, 12 - 1 - 9)
    assert p[u, v] == pytest.approx(0.05)


def test_cone_magnification_depends_on_the_view():
    """A posterior feature is near the source on a PA film (magnified more) and near the
    detector on an AP film."""
    vol = torch.zeros(41, 41, 5)
    vol[30, 5, 2] = 1.0  # 10 mm to the patient's right, 15 mm posterior
    pos = {}
    for view in ("PA", "AP"):
        g = Geometry(view=view, beam="cone", sid_mm=300.0, sod_mm=200.0,
                     detector_shape=(201, 5), pixel_mm=(0.25, 1.5))  # fmt: skip
        p = project(vol, (1.0, 1.0, 1.0), g)
        w = p.sum(1)
        pos[view] = float((w * torch.arange(201)).sum() / w.sum() - 100) * 0.25  # mm from centre
    # the feature at x = +10 mm (right) lands left of centre (u to the patient's left, negative)
    assert pos["PA"] == pytest.approx(-10 * 300 / (200 - 15), rel=0.02)
    assert pos["AP"] == pytest.approx(-10 * 300 / (200 + 15), rel=0.02)


def test_hu_to_mu_uses_water_at_the_effective_energy():
    mu = hu_to_mu(torch.tensor([-1000.0, 0.0, 1000.0, -2000.0]))
    assert mu.tolist() == pytest.approx([0.0, MU_WATER_PER_MM, 2 * MU_WATER_PER_MM, 0.0])


def test_scatter_lowers_the_log_image_by_its_fraction():
    p = torch.full((40, 40), 1.0)
    f = 0.3
    counts = expose(p, (1.0, 1.0), i0=1e4, scatter_fraction=f, scatter_sigma_mm=10.0,
                    noise="none")  # fmt: skip
    expected = -math.log(math.exp(-1.0) / (1 - f))
    assert torch.allclose(log_image(counts), torch.full_like(p, expected), atol=1e-4)


def test_poisson_counts_have_their_mean_as_variance():
    g = torch.Generator().manual_seed(0)
    counts = expose(torch.zeros(128, 128), (1.0, 1.0), i0=400.0, generator=g)
    assert float(counts.mean()) == pytest.approx(400.0, rel=0.01)
    assert float(counts.var()) == pytest.approx(400.0, rel=0.05)


def test_detector_blur_spreads_a_point_and_keeps_its_integral():
    p = torch.zeros(31, 31)
    counts = expose(p, (0.5, 0.5), i0=1.0, noise="none")
    counts[15, 15] += 10.0
    blurred = expose(-torch.log(counts), (0.5, 0.5), i0=1.0, blur_sigma_mm=1.0, noise="none")
    assert float(blurred.sum()) == pytest.approx(float(counts.sum()), rel=1e-4)
    assert float(blurred.max()) < 0.2 * float(counts.max())


def test_monochrome1_is_the_inverse_of_monochrome2():
    img = torch.linspace(0.2, 3.0, 64).reshape(8, 8)
    m2 = to_stored(img, "MONOCHROME2", window=(1.6, 2.8), bits=12)
    m1 = to_stored(img, "MONOCHROME1", window=(1.6, 2.8), bits=12)
    assert torch.equal(m1, 4095 - m2)
    assert int(m2.argmax()) == int(img.argmax())  # dense = bright in MONOCHROME2
    assert torch.equal(from_stored(m1, "MONOCHROME1", bits=12), from_stored(m2, "MONOCHROME2"))
    with pytest.raises(InputError):
        from_stored(m1, "RGB")


def test_a_window_maps_its_edges_to_black_and_white():
    img = torch.tensor([[0.0, 1.0, 2.0]])
    assert to_stored(img, window=(1.0, 2.0), bits=8).tolist() == [[0.0, 128.0, 255.0]]


def test_an_inserted_nodule_peaks_where_placed_with_mu_times_chord():
    bg = torch.zeros(80, 60)
    out = insert_nodule(bg, (0.5, 0.5), (30.0, 20.0), 12.0, "solid", displaced_hu=-1000.0)
    diff = out - bg
    u, v = divmod(int(torch.argmax(diff)), diff.shape[1])
    assert (u, v) == (30, 20)
    mu_nodule = float(hu_to_mu(torch.tensor(40.0)))
    assert float(diff[u, v]) == pytest.approx(mu_nodule * 12.0, rel=1e-5)  # chord = diameter
    # 3 mm off centre (6 px) the chord is 2 sqrt(r^2 - 3^2)
    assert float(diff[u + 6, v]) == pytest.approx(mu_nodule * 2 * math.sqrt(36 - 9), rel=1e-5)
    assert float(diff[u + 13, v]) == 0.0  # outside


def test_nodule_kinds_differ_in_density():
    args = ((41, 41), (0.5, 0.5), (20.0, 20.0), 10.0)
    solid, part, calc = (float(nodule_line_integral(*args, k).max())
                         for k in ("solid", "part_solid", "calcified"))  # fmt: skip
    lung, ggo, core = (float(hu_to_mu(torch.tensor(h))) for h in (-850.0, -450.0, 40.0))
    assert solid == pytest.approx((core - lung) * 10.0, rel=1e-5)
    assert part == pytest.approx((ggo - lung) * 10.0 + (core - ggo) * 5.0, rel=1e-5)
    assert calc > 1.5 * solid  # 700 HU against 40 HU, each minus lung
    with pytest.raises(InputError):
        nodule_line_integral(*args, "glass")


def test_inserting_a_nodule_matches_projecting_it():
    """Line integrals add: the log-image difference of a volume with and without a voxelised
    sphere carries the sphere's attenuation, as the analytic insertion does."""
    n, d = 48, 1.0
    lung = torch.full((n, n, n), float(hu_to_mu(torch.tensor(-850.0))))
    c = (n - 1) / 2
    i, j, k = torch.meshgrid(*[torch.arange(n, dtype=torch.float32)] * 3, indexing="ij")
    ball = ((i - c) ** 2 + (j - c) ** 2 + (k - c) ** 2) <= 10.0**2
    with_nodule = torch.where(ball, hu_to_mu(torch.tensor(40.0)), lung)
    diff = project(with_nodule, (d, d, d)) - project(lung, (d, d, d))
    analytic = nodule_line_integral((n, n), (d, d), (c, c), 20.0, "solid")
    assert float(diff.sum()) == pytest.approx(float(analytic.sum()), rel=0.03)
    assert float(diff.max()) == pytest.approx(float(analytic.max()), rel=0.06)
