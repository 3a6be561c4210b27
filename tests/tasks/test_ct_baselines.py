"""Low-dose CT baselines: FBP in HU and PWLS-TV by PDHG, which must beat FBP at 25 % dose."""

from __future__ import annotations

import pytest
import torch

from medimg.errors import InputError
from medimg.metrics.ct import rmse_hu, windowed_psnr
from medimg.phantoms.ct import body_phantom
from medimg.physics.ct import CTProjector, ParallelBeamGeometry
from medimg.physics.ct_dose import hu_to_mu, simulate_sinogram
from medimg.tasks.reconstruct.ct import fbp_hu, tv_pdhg, tv_reconstruct_hu
from medimg.tasks.reconstruct.ct.baselines import _grad_adjoint, grad2d

I0 = 2e4  # full-dose photons per detector element and view


@pytest.fixture(scope="module")
def case():
    ph = body_phantom((96, 96), (4.0, 4.0), region="thorax", n_nodules=2, seed=5)
    g = ParallelBeamGeometry(image_shape=(96, 96), n_views=90, pixel_size=4.0)
    op = CTProjector(g)
    low = simulate_sinogram(torch.from_numpy(ph.hu), op, dose_fraction=0.25, i0=I0, seed=1)
    return ph, g, op, low


def test_iterative_beats_low_dose_fbp_at_quarter_dose(case) -> None:
    ph, g, op, low = case
    fbp_err = min(rmse_hu(ph.hu, fbp_hu(low, g, filter_name=f)) for f in ("ram-lak", "hann"))
    tv = tv_reconstruct_hu(low, op, i0=0.25 * I0, n_iter=60)
    assert rmse_hu(ph.hu, tv) < 0.8 * fbp_err
    assert windowed_psnr(ph.hu, tv).value > windowed_psnr(ph.hu, fbp_hu(low, g)).value + 1.5


def test_fbp_hu_scale() -> None:
    g = ParallelBeamGeometry(image_shape=(64, 64), n_views=96, pixel_size=2.0)
    rr, cc = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    hu = torch.where((rr - 31.5) ** 2 + (cc - 31.5) ** 2 < 24**2, 0.0, -1000.0)  # water in air
    rec = fbp_hu(CTProjector(g).A(hu_to_mu(hu)), g, filter_name="ram-lak")
    assert abs(float(rec[24:40, 24:40].mean())) < 5  # water stays 0 HU
    assert abs(float(rec[:4, :4].mean()) + 1000) < 10  # air stays -1000 HU


def test_grad_adjoint_and_tv_smoothing() -> None:
    gen = torch.Generator().manual_seed(0)
    x, p = torch.randn(2, 9, 11, generator=gen), torch.randn(2, 2, 9, 11, generator=gen)
    torch.testing.assert_close((grad2d(x) * p).sum(), (x * _grad_adjoint(p)).sum())
    op = CTProjector(ParallelBeamGeometry(image_shape=(24, 24), n_views=30))
    y = op.A(torch.rand(1, 1, 24, 24, generator=gen))
    tv = [float(grad2d(tv_pdhg(y, op, lam=lam, n_iter=40)).norm(dim=-3).sum()) for lam in (0.1, 3)]
    assert tv[1] < 0.5 * tv[0]  # more weight, flatter image


def test_tv_pdhg_fits_clean_data_and_batches() -> None:
    op = CTProjector(ParallelBeamGeometry(image_shape=(20, 20), n_views=40)).double()
    x = torch.zeros(2, 1, 20, 20, dtype=torch.float64)
    x[0, 0, 5:15, 6:12], x[1, 0, 3:9, 3:17] = 1.0, 0.5
    rec = tv_pdhg(op.A(x), op, lam=1e-3, n_iter=150)
    assert float((rec - x).abs().mean()) < 0.02
    torch.testing.assert_close(tv_pdhg(op.A(x[1:]), op, lam=1e-3, n_iter=150), rec[1:])


def test_bad_input(case) -> None:
    _, g, op, low = case
    bad = low.clone()
    bad[0, 3] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        fbp_hu(bad, g)
    with pytest.raises(InputError, match="i0"):
        tv_reconstruct_hu(low, op, i0=0.0)
    with pytest.raises(InputError, match="lam"):
        tv_pdhg(low, op, lam=0.0)
    with pytest.raises(InputError, match="weights"):
        tv_pdhg(low, op, lam=1.0, weights=torch.ones(3))
    with pytest.raises(InputError, match="sinogram"):
        tv_pdhg(low[:, :-1], op, lam=1.0)
