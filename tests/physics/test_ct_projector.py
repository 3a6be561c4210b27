"""CT projector: adjointness over a registry of geometries and methods, conventions, scale,
accuracy against exact line integrals, the non-uniform FFT against a direct sum, memory, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import radon, resize

from medimg.errors import InputError
from medimg.physics.ct import (
    _NUFFT,
    CTProjector,
    FanBeamGeometry,
    ParallelBeamGeometry,
    ellipse_phantom,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# One entry per operator: every property test below runs on all of them (odd, non-square sizes).
# Parallel beams default to the Fourier projector; "_ray" entries are the ray-driven one.
_OFFSET = dict(
    image_shape=(33, 35),
    n_views=17,
    angle_range=2 * math.pi,
    det_center=12.3,
    iso_center=(15.2, 18.0),
    det_spacing=0.7,
    pixel_size=0.8,
    sample_step=0.5,
)
OPERATORS = {
    "parallel": lambda: ParallelBeamGeometry(image_shape=(37, 31), n_views=23),
    "parallel_ray": lambda: (ParallelBeamGeometry(image_shape=(37, 31), n_views=23), "ray"),
    "parallel_offset": lambda: ParallelBeamGeometry(**_OFFSET),
    "parallel_offset_ray": lambda: (ParallelBeamGeometry(**_OFFSET), "ray"),
    "fan": lambda: FanBeamGeometry(image_shape=(37, 31), n_views=29, source_iso=80.0,
                                   source_det=150.0),
    "fan_short_scan": lambda: FanBeamGeometry(image_shape=(31, 31), n_views=21, angle_range=4.0,
                                              source_iso=60.0, source_det=100.0, pixel_size=1.2),
}  # fmt: skip


def _op(name: str, **kw) -> CTProjector:
    made = OPERATORS[name]()
    geometry, method = made if isinstance(made, tuple) else (made, None)
    return CTProjector(geometry, method=method, **kw)


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


@pytest.mark.parametrize("cache_mb", [256.0, 0.0])  # cached sampling grid and on-the-fly chunks
@pytest.mark.parametrize("name", OPERATORS)
def test_adjointness(name: str, cache_mb: float, device: torch.device) -> None:
    op = _op(name, max_cache_mb=cache_mb).to(device)
    gen = torch.Generator().manual_seed(1)
    h, w = op.geometry.image_shape
    x = torch.rand(2, 1, h, w, generator=gen, dtype=torch.float64).to(device)
    assert op.adjointness_error(x) < 1e-4
    y = torch.randn(2, 1, *op.geometry.sinogram_shape, generator=gen, dtype=torch.float64)
    assert op.adjointness_error(x, y.to(device)) < 1e-4


@pytest.mark.parametrize("name", OPERATORS)
def test_batch_and_volume_slices(name: str) -> None:
    op = _op(name).double()
    h, w = op.geometry.image_shape
    vol = torch.rand(2, 1, 3, h, w, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = op.A(vol)
    assert y.shape == (2, 1, 3, *op.geometry.sinogram_shape)
    torch.testing.assert_close(y[1, 0, 2], op.A(vol[1, 0, 2]))
    torch.testing.assert_close(op.A_adjoint(y)[0, 0, 1], op.A_adjoint(y[0, 0, 1]))


def _blob_projection(theta: torch.Tensor, s: torch.Tensor, c: tuple[float, float], sig: float):
    """Line integral of exp(-|p - c|^2 / 2 sig^2) along the ray (theta, s): analytic."""
    dist = s - (c[0] * torch.cos(theta) + c[1] * torch.sin(theta))
    return math.sqrt(2 * math.pi) * sig * torch.exp(-(dist**2) / (2 * sig**2))


def _blob_image(g, c: tuple[float, float], sig: float) -> torch.Tensor:
    (h, w), (r0, c0), d = g.image_shape, g.iso_center, g.pixel_size
    rows, cols = torch.meshgrid(torch.arange(float(h)), torch.arange(float(w)), indexing="ij")
    x, y = (cols - c0) * d, (r0 - rows) * d  # y points up, towards row 0
    return torch.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2) / (2 * sig**2)).double()


def test_geometry_conventions_against_analytic_line_integrals() -> None:
    """Both projectors against exact line integrals of an off-centre Gaussian (mm units)."""
    c, sig = (6.0, 3.5), 2.5
    par = ParallelBeamGeometry(image_shape=(64, 60), n_views=36, pixel_size=0.5, sample_step=0.5)
    fan = FanBeamGeometry(image_shape=(64, 60), n_views=36, pixel_size=0.5, source_iso=70.0,
                          source_det=120.0, sample_step=0.5)  # fmt: skip
    for g, method in ((par, "fourier"), (par, "ray"), (fan, "ray")):
        y = CTProjector(g, method=method).double().A(_blob_image(g, c, sig))
        beta, u = g.angles()[:, None], g.det_coords()[None, :]
        if isinstance(g, ParallelBeamGeometry):
            expected = _blob_projection(beta, u, c, sig)
        else:  # fan ray (beta, gamma) is the parallel ray (beta + gamma, DSO sin gamma)
            expected = _blob_projection(beta + u, g.source_iso * torch.sin(u), c, sig)
        # 0.5% is bilinear interpolation smoothing; a wrong convention gives O(100%)
        assert (y - expected).abs().max() < 1e-2 * expected.max()


def test_forward_matches_skimage_radon_on_shepp_logan() -> None:
    img = resize(shepp_logan_phantom(), (128, 128))
    theta = np.linspace(0.0, 180.0, 60, endpoint=False)
    ref = radon(img, theta)  # (n_det, n_views), rotation axis at pixel n // 2
    g = ParallelBeamGeometry(image_shape=(128, 128), n_views=60, n_det=128, det_center=64,
                             iso_center=(64, 64))  # fmt: skip
    ours = CTProjector(g, method="ray").double().A(torch.from_numpy(img)).numpy().T
    rel = np.abs(ours - ref).max() / np.abs(ref).max()
    assert rel < 1e-6, f"max relative difference to skimage.radon: {rel:.2e}"
    fourier = CTProjector(g).double().A(torch.from_numpy(img)).numpy().T  # another model, close
    assert np.abs(fourier - ref).max() < 0.1 * np.abs(ref).max()


def test_fourier_projector_closer_to_exact_line_integrals_than_radon() -> None:
    n, theta = 96, np.linspace(0.0, 180.0, 45, endpoint=False)
    img, exact = (t.numpy() for t in ellipse_phantom(n, torch.from_numpy(np.deg2rad(theta))))
    g = ParallelBeamGeometry(image_shape=(n, n), n_views=45, n_det=n, det_center=n // 2,
                             iso_center=(n // 2, n // 2))  # fmt: skip
    ours = CTProjector(g).double().A(torch.from_numpy(img)).numpy()
    ski = radon(img, theta).T
    rmse = lambda a: float(np.sqrt(np.mean((a - exact) ** 2)))  # noqa: E731
    assert rmse(ours) < 0.9 * rmse(ski), (rmse(ours), rmse(ski))
    assert rmse(ski) < 0.05 * exact.max()  # the reference itself is right: radon is close


def test_nufft_matches_the_direct_sum() -> None:
    """The gridded non-uniform FFT (both types) against the sums it approximates."""
    gen = torch.Generator().manual_seed(4)
    h, w, m = 12, 9, 50
    om = (torch.rand(m, 2, generator=gen, dtype=torch.float64) * 2 - 1) * 4.0  # some alias
    nu = _NUFFT((h, w), om)
    n1 = torch.arange(h, dtype=torch.float64) - h // 2
    n2 = torch.arange(w, dtype=torch.float64) - w // 2
    e = torch.exp(-1j * (om[:, 0, None, None] * n1[:, None] + om[:, 1, None, None] * n2))
    x = torch.randn(2, h, w, generator=gen, dtype=torch.float64)
    ref = torch.einsum("mhw,chw->cm", e, x.to(torch.complex128))
    assert (nu.forward(x) - ref).abs().max() < 1e-4 * ref.abs().max()
    c = torch.randn(2, m, generator=gen, dtype=torch.complex128)
    ref1 = torch.einsum("mhw,cm->chw", e.conj(), c)
    assert (nu.adjoint(c) - ref1).abs().max() < 1e-4 * ref1.abs().max()


def test_clinical_size_stores_no_matrix_per_pixel_and_view() -> None:
    """512^2 x 1000 views: the Fourier projector keeps O(views x detectors) taps, not a
    (views x detectors) x pixels matrix, and holds no sampling grid."""
    g = ParallelBeamGeometry(image_shape=(512, 512), n_views=1000, pixel_size=0.7)
    op = CTProjector(g)
    y = op.A(torch.zeros(512, 512))
    assert y.shape == (1000, 725) and op.method == "fourier" and not op._cache
    stored = sum(t.numel() * t.element_size() for t in op._fourier.nufft._on[(y.device, y.dtype)]
                 if t.layout == torch.strided)  # fmt: skip
    mat = op._fourier.nufft._on[(y.device, y.dtype)][0]
    assert mat.values().numel() <= 36 * g.n_views * op._fourier.n_freq
    assert stored + mat.values().numel() * 8 < 400 * 2**20  # < 400 MB in all


@pytest.mark.parametrize("method", ["fourier", "ray"])
def test_gradients_are_exact_transposes(method: str) -> None:
    op = CTProjector(ParallelBeamGeometry(image_shape=(7, 6), n_views=5), method=method).double()
    x = torch.rand(1, 1, 7, 6, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 1, *op.geometry.sinogram_shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(op.A, (x,))
    assert torch.autograd.gradcheck(op.A_adjoint, (y,))
    assert torch.autograd.gradgradcheck(op.A_adjoint, (y,))


def test_noise_module_and_buffers() -> None:
    op = CTProjector(ParallelBeamGeometry(image_shape=(9, 9), n_views=4), noise=lambda y: y + 1)
    assert "angles" in dict(op.named_buffers())
    x = torch.zeros(1, 1, 9, 9)
    assert torch.equal(op(x), op.A(x) + 1)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ParallelBeamGeometry(image_shape=(0, 8), n_views=4),
        lambda: ParallelBeamGeometry(image_shape=(8, 8), n_views=4, pixel_size=-1.0),
        lambda: FanBeamGeometry(image_shape=(8, 8), n_views=4, source_iso=100, source_det=50),
        lambda: FanBeamGeometry(image_shape=(256, 256), n_views=4, pixel_size=5.0),
    ],
)
def test_bad_geometry(make) -> None:
    with pytest.raises(InputError):
        make()


def test_fourier_method_needs_a_parallel_beam() -> None:
    fan = FanBeamGeometry(image_shape=(16, 16), n_views=8, source_iso=80.0, source_det=150.0)
    with pytest.raises(InputError, match="method"):
        CTProjector(fan, method="fourier")
    assert CTProjector(fan).method == "ray"


def test_shape_mismatch_is_one_line_error() -> None:
    op = CTProjector(ParallelBeamGeometry(image_shape=(16, 16), n_views=8))
    with pytest.raises(InputError, match="image_shape") as err:
        op.A(torch.zeros(1, 1, 16, 15))
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="sinogram"):
        op.A_adjoint(torch.zeros(1, 1, 9, op.geometry.sinogram_shape[1]))
