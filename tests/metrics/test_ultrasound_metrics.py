"""PICMUS metrics on hand-made inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medimg.errors import InputError
from medimg.metrics.ultrasound import cnr_db, contrast_db, cyst_masks, fwhm, gcnr, speckle_snr


def test_gcnr_identical_is_zero_and_disjoint_is_one() -> None:
    rng = np.random.default_rng(0)
    a = rng.rayleigh(1.0, 20000)
    assert gcnr(a, rng.rayleigh(1.0, 20000)) < 0.05
    assert gcnr(a, a + 100) == pytest.approx(1.0)
    assert gcnr(np.ones(5), np.ones(5)) == 0.0


def test_fwhm_of_a_gaussian_and_rayleigh_speckle_snr() -> None:
    t = np.arange(-50, 51) * 0.1
    assert fwhm(np.exp(-(t**2) / 2), 0.1) == pytest.approx(2 * math.sqrt(2 * math.log(2)), rel=1e-3)
    assert fwhm(np.ones(10), 1.0) == math.inf  # never drops to half
    env = np.random.default_rng(1).rayleigh(1.0, 100000)
    assert speckle_snr(env) == pytest.approx(1.913, abs=0.02)


def test_cyst_contrast_and_cnr() -> None:
    x = z = np.arange(-5, 5.01, 0.05) * 1e-3
    inside, outside = cyst_masks(x, z, (0.0, 0.0), 2e-3)
    assert inside.sum() == pytest.approx(outside.sum(), rel=0.05)  # equal areas
    env = np.where(np.hypot(x[:, None], z[None, :]) < 2e-3, 0.1, 1.0)
    env = env * np.random.default_rng(2).rayleigh(1.0, env.shape)
    assert contrast_db(env, inside, outside) == pytest.approx(-20.0, abs=0.5)
    assert cnr_db(env, inside, outside) == pytest.approx(
        20 * math.log10(0.9 * 1.2533 / math.sqrt((0.01 + 1) * 0.4292 / 2)), abs=0.3
    )
    with pytest.raises(InputError):
        cyst_masks(x, z, (0.0, 0.0), 0.01e-3)
