"""Linear-array channel-data simulator and delay-and-sum: a point lands where it was placed, the
point-spread function matches theory, DAS uses the hand-computed delay, attenuation and noise
follow their models."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import hilbert

from medimg.errors import InputError
from medimg.metrics.ultrasound import point_fwhm
from medimg.physics.ultrasound import (
    LinearArray,
    Transmits,
    attenuation_np,
    plane_wave_angles,
    simulate_channel_data,
)
from medimg.physics.ultrasound_das import beamform, das_delay, log_compress

PROBE = LinearArray()
LAM = PROBE.wavelength


def _point(x: float, z: float, tx: Transmits, **kw):
    return simulate_channel_data(np.array([x]), np.array([z]), np.ones(1), tx, PROBE,
                                 depth=z + 3e-3, **kw)  # fmt: skip


@pytest.mark.parametrize("kind", ["plane", "focused"])
def test_point_target_lands_where_placed(kind) -> None:
    px, pz = 1.37e-3, 17.3e-3  # off the pixel grid on purpose
    if kind == "plane":
        tx = Transmits("plane", angles=np.deg2rad([-8.0, 0.0, 8.0]))
        x = np.arange(0.5e-3, 2.5e-3, 0.02e-3)
    else:  # one focused line through the point
        tx = Transmits("focused", focus=np.array([[px, 15e-3]]))
        x = np.array([px])
    d = _point(px, pz, tx, snr_db=None)
    z = np.arange(16.5e-3, 18e-3, 0.01e-3)
    env = np.abs(beamform(d, x, z))
    i, j = np.unravel_index(int(np.argmax(env)), env.shape)
    # parabolic refinement of the axial peak: sub-pixel depth
    a, b, c = np.log(env[i, j - 1 : j + 2])
    z_peak = z[j] + 0.5 * (a - c) / (a - 2 * b + c) * (z[1] - z[0])
    assert abs(z_peak - pz) < LAM / 20
    assert abs(x[i] - px) < LAM / 10


def test_point_spread_function_matches_theory() -> None:
    """One plane wave: lateral FWHM = 2.0 lambda F# (Hann receive aperture, -6 dB), axial FWHM
    = the two-way Gaussian pulse's: 2.355 c / (2 (2 pi sigma_f))."""
    d = _point(0.0, 20e-3, Transmits("plane", angles=np.zeros(1)), snr_db=None, attenuation=0)
    x, z = np.arange(-2e-3, 2e-3, 0.02e-3), np.arange(19e-3, 21e-3, 0.01e-3)
    lat, ax = point_fwhm(np.abs(beamform(d, x, z, fnumber=1.75)), x, z, (0.0, 20e-3))
    assert lat == pytest.approx(2.0 * LAM * 1.75, rel=0.15)
    axial = 2 * math.sqrt(2 * math.log(2)) / (2 * math.pi * PROBE.sigma_f) * PROBE.c / 2
    assert ax == pytest.approx(axial, rel=0.1)


def test_das_delay_equals_hand_computed() -> None:
    theta, element, x, z = math.radians(10.0), 5, 2e-3, 20e-3
    d = _point(0.0, 10e-3, Transmits("plane", angles=np.array([0.0, theta])), snr_db=None)
    xe = (element - 63.5) * 0.3e-3
    hand = (x * math.sin(theta) + z * math.cos(theta)) / 1540 + math.hypot(x - xe, z) / 1540
    assert das_delay(d, 1, element, x, z) == pytest.approx(hand, rel=1e-12)
    # focused at (0, 15 mm): converge (15 mm) then diverge (+|p - f|)
    f = Transmits("focused", focus=np.array([[0.0, 15e-3]]))
    df = _point(0.0, 10e-3, f, snr_db=None)
    hand_f = (15e-3 + math.hypot(x, z - 15e-3)) / 1540 + math.hypot(x - xe, z) / 1540
    assert das_delay(df, 0, element, x, z) == pytest.approx(hand_f, rel=1e-12)


def test_attenuation_scales_echoes_by_its_model() -> None:
    tx = Transmits("plane", angles=np.zeros(1))
    z = 25e-3
    clean = _point(0.0, z, tx, snr_db=None, attenuation=0.0).rf[0, 63]
    att = _point(0.0, z, tx, snr_db=None, attenuation=0.7).rf[0, 63]
    ratio = np.abs(hilbert(att)).max() / np.abs(hilbert(clean)).max()
    a, d = attenuation_np(0.7), 2 * z + 0.15e-3**2 / z  # round trip to the central element
    model = math.exp(-a * d * PROBE.fc + (a * d * PROBE.sigma_f) ** 2 / 2)
    assert ratio == pytest.approx(model, rel=0.03)
    # and the spectrum moves down by a d sigma^2
    f = np.fft.rfftfreq(clean.size, 1 / PROBE.fs)
    centroid = [float((f * np.abs(np.fft.rfft(s))).sum() / np.abs(np.fft.rfft(s)).sum())
                for s in (clean, att)]  # fmt: skip
    assert centroid[0] - centroid[1] == pytest.approx(a * d * PROBE.sigma_f**2, rel=0.15)


def test_noise_level_follows_snr() -> None:
    tx = Transmits("plane", angles=np.zeros(1))
    clean = _point(0.0, 10e-3, tx, snr_db=None)
    noisy = _point(0.0, 10e-3, tx, snr_db=20.0, seed=3)
    rms = np.sqrt(np.mean(clean.rf.astype(np.float64) ** 2))
    assert np.std(noisy.rf - clean.rf) / rms == pytest.approx(0.1, rel=0.05)


def test_bad_inputs_are_one_line_errors() -> None:
    tx = Transmits("plane", angles=np.zeros(1))
    with pytest.raises(InputError, match="positive depth"):
        simulate_channel_data(np.zeros(1), np.zeros(1), np.ones(1), tx)
    with pytest.raises(InputError, match="Nyquist"):
        LinearArray(fs=10e6)
    with pytest.raises(InputError):
        Transmits("plane", angles=np.array([math.pi / 2]))
    assert plane_wave_angles(75)[[0, 37, 74]] == pytest.approx(np.deg2rad([-16, 0, 16]))
    db = log_compress(np.array([[1.0, 0.1, 0.0]]), 30)
    assert db[0].tolist() == pytest.approx([0.0, -20.0, -30.0])
