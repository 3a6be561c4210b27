"""Dose simulation: HU <-> mu, transmission-noise statistics, seeding, clipping, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medimg.errors import InputError
from medimg.phantoms.ct import shepp_logan_hu
from medimg.physics.ct import CTProjector, ParallelBeamGeometry
from medimg.physics.ct_dose import (
    MU_WATER,
    TransmissionNoise,
    check_hu,
    counts_to_line_integrals,
    expected_variance,
    hu_to_mu,
    mu_to_hu,
    simulate_sinogram,
)


def test_hu_mu_round_trip() -> None:
    hu = torch.tensor([-1000.0, -500.0, 0.0, 40.0, 1000.0], dtype=torch.float64)
    mu = hu_to_mu(hu)
    assert mu[0] == 0 and mu[2] == MU_WATER and abs(float(mu[4]) - 2 * MU_WATER) < 1e-15
    torch.testing.assert_close(mu_to_hu(mu), hu)
    assert hu_to_mu(torch.tensor([-1500.0])).item() == 0  # below air is air


@pytest.mark.parametrize("i0", [2e3, 2e4, 2e5])
@pytest.mark.parametrize("p", [1.0, 2.5])
def test_log_measurement_variance_is_one_over_counts(i0: float, p: float) -> None:
    noise = TransmissionNoise(i0, electronic_std=0.0, seed=0)
    y = noise(torch.full((40000,), p, dtype=torch.float64))
    expected = 1.0 / (i0 * np.exp(-p))
    assert abs(float(y.var()) / expected - 1) < 0.05
    assert abs(float(y.mean()) - p) < 5 * np.sqrt(expected / 40000) + expected  # bias ~ 1/lam


def test_electronic_noise_and_dose_fraction() -> None:
    p = torch.full((40000,), 2.0, dtype=torch.float64)
    full = TransmissionNoise(1e4, electronic_std=0.0, seed=1)(p).var()
    quarter = TransmissionNoise(1e4, dose_fraction=0.25, electronic_std=0.0, seed=1)(p).var()
    assert abs(float(quarter / full) - 4) < 0.25
    e = TransmissionNoise(1e4, electronic_std=40.0, seed=2)(p).var()
    expected = expected_variance(torch.tensor(2.0), 1e4, 1.0, 40.0)
    assert abs(float(e / expected) - 1) < 0.06
    assert float(e) > 2 * float(expected_variance(torch.tensor(2.0), 1e4))


def test_photon_starvation_is_clipped_not_infinite() -> None:
    y = TransmissionNoise(5.0, electronic_std=3.0, seed=0)(torch.full((1000,), 8.0))
    assert torch.isfinite(y).all() and float(y.max()) <= np.log(5.0) + 1e-6


def test_seeded_and_reproducible() -> None:
    p = torch.rand(50, 60, generator=torch.Generator().manual_seed(0)) * 4
    a, b = TransmissionNoise(1e4, seed=7), TransmissionNoise(1e4, seed=7)
    first = a(p)
    assert torch.equal(first, b(p))
    assert not torch.equal(first, a(p))  # the stream advances
    a.reset()
    assert torch.equal(first, a(p))
    assert not torch.equal(first, TransmissionNoise(1e4, seed=8)(p))


def test_counts_to_line_integrals() -> None:
    counts = torch.tensor([1e4, 1e3, 0.0])
    p = counts_to_line_integrals(counts, 1e4)
    torch.testing.assert_close(p, torch.tensor([0.0, np.log(10.0), np.log(1e4)]).float())
    with pytest.raises(InputError, match="counts must be >= 0"):
        counts_to_line_integrals(torch.tensor([5.0, -1.0]), 1e4)
    with pytest.raises(InputError, match="i0"):
        counts_to_line_integrals(counts, 0.0)


@pytest.mark.parametrize(
    "kwargs",
    [{"i0": 0.0}, {"i0": -5.0}, {"dose_fraction": 0.0}, {"electronic_std": -1.0}],
)
def test_bad_noise_settings(kwargs: dict) -> None:
    args = {"i0": 1e4, **kwargs}
    with pytest.raises(InputError):
        TransmissionNoise(args.pop("i0"), **args)


def test_nan_line_integrals() -> None:
    with pytest.raises(InputError, match="NaN"):
        TransmissionNoise(1e4)(torch.tensor([1.0, float("nan")]))


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.linspace(0, 1, 20), r"\[-1, 1\], not Hounsfield"),
        (np.array([0.0, np.nan]), "NaN"),
        (np.array([-1000.0, 65000.0]), "rescale"),
    ],
)
def test_check_hu_refuses_non_hu(image: np.ndarray, match: str) -> None:
    with pytest.raises(InputError, match=match) as err:
        check_hu(image)
    assert "\n" not in str(err.value)
    check_hu(np.array([-1024.0, 0.0, 3071.0]))  # a real CT range passes


def test_simulated_sinogram_noise_scales_with_dose() -> None:
    hu = torch.from_numpy(shepp_logan_hu(64))
    op = CTProjector(ParallelBeamGeometry(image_shape=(64, 64), n_views=60, pixel_size=2.0))
    clean = op.A(hu_to_mu(hu))
    err = {f: simulate_sinogram(hu, op, dose_fraction=f, i0=1e4, seed=3) - clean for f in (1, 0.25)}
    weight = torch.exp(-clean)  # var ~ exp(p) / (I0 f): normalise it out
    ratio = float((err[0.25] ** 2 * weight).mean() / (err[1] ** 2 * weight).mean())
    assert 3.4 < ratio < 4.6
    with pytest.raises(InputError, match="Hounsfield"):
        simulate_sinogram(torch.rand(64, 64), op)


def test_tube_current_modulation_sets_the_variance_per_view() -> None:
    p = torch.full((2, 20000), 2.0)  # two views, same attenuation
    flux = torch.tensor([[0.5], [2.0]])  # relative tube current (mean-1 profile not required)
    y = TransmissionNoise(1e4, electronic_std=0.0, view_flux=flux, seed=3)(p)
    ratio = float(y[0].var() / y[1].var())
    assert ratio == pytest.approx(4.0, rel=0.1)  # variance ~ 1 / flux
    assert float(y.mean()) == pytest.approx(2.0, abs=0.02)  # unbiased at this flux
    with pytest.raises(InputError, match="view_flux"):
        TransmissionNoise(1e4, view_flux=torch.tensor([[1.0], [0.0]]))
