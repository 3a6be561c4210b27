"""FBP: accuracy on Shepp-Logan against iradon, absolute scale, filters, fan beam, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import iradon, radon, resize

from medimg.errors import InputError
from medimg.physics.ct import CTProjector, FanBeamGeometry, ParallelBeamGeometry
from medimg.physics.ct_fbp import FBP, FILTERS, fbp, filter_window

N, VIEWS = 128, 90
THETA = np.linspace(0.0, 180.0, VIEWS, endpoint=False)
# scikit-image's convention: rotation axis at pixel n // 2, n detector elements
SKI = ParallelBeamGeometry(image_shape=(N, N), n_views=VIEWS, n_det=N, det_center=N // 2,
                           iso_center=(N // 2, N // 2))  # fmt: skip


@pytest.fixture(scope="module")
def phantom() -> np.ndarray:
    return resize(shepp_logan_phantom(), (N, N))


@pytest.fixture(scope="module")
def sino(phantom: np.ndarray) -> np.ndarray:
    return radon(phantom, THETA)  # (n_det, n_views)


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


@pytest.mark.parametrize("name", ["ramp", "shepp-logan", "cosine", "hann"])
def test_fbp_equal_or_better_than_iradon(name: str, phantom, sino) -> None:
    y = torch.from_numpy(sino.T.copy())
    ref = iradon(sino, THETA, filter_name=name)
    linear = FBP(SKI, name, circle=True, upsample=1)(y).numpy()  # iradon's interpolation
    assert _rmse(linear, phantom) <= _rmse(ref, phantom) * (1 + 1e-6)
    if name != "hann":  # same filter definitions: same image (hann windows differ slightly)
        assert np.abs(linear - ref).max() < 1e-5
    ours = FBP(SKI, name, circle=True)(y).numpy()  # default: sinc-upsampled projections
    assert _rmse(ours, phantom) < 0.97 * _rmse(ref, phantom)
    assert _rmse(ours, phantom) < 0.06  # Shepp-Logan in [0, 1] from 90 views


def _mu_phantom(n: int) -> torch.Tensor:
    return 0.02 * torch.from_numpy(resize(shepp_logan_phantom(), (n, n)))  # 1/mm


@pytest.mark.parametrize(
    "geometry",
    [
        ParallelBeamGeometry(image_shape=(96, 96), n_views=120, pixel_size=0.5),
        FanBeamGeometry(image_shape=(96, 96), n_views=240, pixel_size=0.5, source_iso=150.0,
                        source_det=280.0),
        FanBeamGeometry(image_shape=(96, 96), n_views=200, pixel_size=0.5, source_iso=150.0,
                        source_det=280.0, angle_range=math.pi + 0.75),  # short scan, Parker
    ],
    ids=["parallel", "fan_full", "fan_short"],
)  # fmt: skip
def test_fbp_returns_the_image_in_its_units(geometry) -> None:
    mu = _mu_phantom(96)
    rec = FBP(geometry)(CTProjector(geometry).double().A(mu))
    rel = float((rec - mu).norm() / mu.norm())
    centre = float(rec[40:56, 40:56].mean() / mu[40:56, 40:56].mean())
    assert rel < 0.2, rel
    assert abs(centre - 1) < 0.01, centre


def test_fan_short_scan_needs_enough_angles() -> None:
    g = FanBeamGeometry(image_shape=(64, 64), n_views=90, source_iso=150.0, source_det=280.0,
                        angle_range=math.pi)  # fmt: skip
    with pytest.raises(InputError, match="angle_range"):
        FBP(g)


def test_filter_windows() -> None:
    nu = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    expected = {"ram-lak": [1, 1, 1], "shepp-logan": [1, math.sin(math.pi / 4) / (math.pi / 4),
                2 / math.pi], "cosine": [1, math.cos(math.pi / 4), 0], "hann": [1, 0.5, 0]}  # fmt: skip
    for name in FILTERS:
        torch.testing.assert_close(filter_window(name, nu), torch.tensor(expected[name]).double())
    assert filter_window("hann", nu, 0.5)[2] == 0 and filter_window("ram-lak", nu, 0.4)[1] == 0
    with pytest.raises(InputError, match="filter_name"):
        filter_window("gauss", nu)
    with pytest.raises(InputError, match="frequency_scaling"):
        FBP(SKI, "hann", 1.5)


def test_apodisation_lowers_noise() -> None:
    noise = torch.randn(VIEWS, N, generator=torch.Generator().manual_seed(0))
    stds = [float(FBP(SKI, name, circle=True)(noise).std()) for name in FILTERS]
    assert stds == sorted(stds, reverse=True)  # ram-lak > shepp-logan > cosine > hann
    assert float(FBP(SKI, "hann", 0.5)(noise).std()) < stds[-1]


@pytest.mark.parametrize("geometry", [SKI, FanBeamGeometry(image_shape=(33, 37), n_views=40)])
def test_sparse_matrix_and_chunked_paths_agree(geometry) -> None:
    y = torch.rand(2, *geometry.sinogram_shape, generator=torch.Generator().manual_seed(3))
    fast, slow = FBP(geometry, "hann"), FBP(geometry, "hann", max_matrix_mb=0.0)
    torch.testing.assert_close(fast(y), slow(y), rtol=1e-4, atol=1e-4 * float(fast(y).abs().max()))


def test_volume_slice_by_slice_and_differentiable() -> None:
    g = ParallelBeamGeometry(image_shape=(31, 29), n_views=24)
    y = torch.rand(2, 1, 3, *g.sinogram_shape, requires_grad=True)
    rec = FBP(g)(y)
    assert rec.shape == (2, 1, 3, 31, 29)
    torch.testing.assert_close(rec[1, 0, 2], FBP(g)(y[1, 0, 2]))
    torch.testing.assert_close(fbp(y, g), rec)
    rec.square().sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_bad_sinograms_are_one_line_errors() -> None:
    op = FBP(SKI)
    with pytest.raises(InputError, match="sinogram") as err:
        op(torch.zeros(VIEWS, N + 1))
    assert "\n" not in str(err.value)
    bad = torch.zeros(VIEWS, N)
    bad[3, 4] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        op(bad)
