"""Ultrasound image-quality metrics as the PICMUS challenge reports them.

- resolution: lateral and axial full width at half maximum (-6 dB of the envelope) of a point
  target, measured on profiles through its envelope peak, interpolated between pixels;
- contrast: ``20 log10(mu_in / mu_out)`` of the envelope means inside a cyst and in the
  background around it (negative for an anechoic cyst);
- CNR: ``20 log10(|mu_in - mu_out| / sqrt((var_in + var_out) / 2))`` (PICMUS's dB form);
- gCNR (Rodriguez-Molares et al. 2020): ``1 - overlap`` of the two envelope histograms, from 0
  (indistinguishable) to 1 (no pixel of one region could be taken for the other);
- speckle SNR: ``mu / sigma`` of the envelope in homogeneous speckle (1.91 for fully developed
  Rayleigh speckle).

All functions take the linear envelope (not dB); images are ``(n_x, n_z)`` with axis 0 lateral.
"""

from __future__ import annotations

import math

import numpy as np

from medimg.errors import InputError

__all__ = [
    "cnr_db",
    "contrast_db",
    "cyst_masks",
    "fwhm",
    "gcnr",
    "point_fwhm",
    "speckle_snr",
]


def fwhm(profile: np.ndarray, spacing: float, peak: int | None = None) -> float:
    """Full width at half maximum of the main lobe around ``peak`` (default: the maximum), with
    linear interpolation of the two half-maximum crossings; ``inf`` if a side never drops to half
    within the profile."""
    prof = np.abs(np.asarray(profile)).astype(np.float64).ravel()
    if prof.size < 3:
        raise InputError("FWHM needs a profile of at least 3 samples")
    i = int(np.argmax(prof)) if peak is None else int(peak)
    half = prof[i] / 2
    if half <= 0:
        return math.inf
    left = i
    while left > 0 and prof[left - 1] > half:
        left -= 1
    right = i
    while right < prof.size - 1 and prof[right + 1] > half:
        right += 1
    if left == 0 or right == prof.size - 1:
        return math.inf
    # crossings between (left-1, left) and (right, right+1)
    xl = left - (prof[left] - half) / (prof[left] - prof[left - 1])
    xr = right + (prof[right] - half) / (prof[right] - prof[right + 1])
    return float((xr - xl) * spacing)


def point_fwhm(
    envelope: np.ndarray,
    x: np.ndarray,
    z: np.ndarray,
    point: tuple[float, float],
    search: float = 1e-3,
) -> tuple[float, float]:
    """Lateral and axial FWHM (same unit as ``x``/``z``) of the point target nearest ``point``:
    the envelope's maximum within ``search`` of it, profiles through that pixel."""
    env = np.abs(np.asarray(envelope))
    sel_x = np.abs(x - point[0]) <= search
    sel_z = np.abs(z - point[1]) <= search
    if not sel_x.any() or not sel_z.any():
        raise InputError(f"point {point} lies outside the image grid")
    sub = np.where(sel_x[:, None] & sel_z[None, :], env, -np.inf)
    i, j = np.unravel_index(int(np.argmax(sub)), sub.shape)
    dx = float(x[1] - x[0]) if x.size > 1 else math.nan
    dz = float(z[1] - z[0]) if z.size > 1 else math.nan
    return fwhm(env[:, j], dx, int(i)), fwhm(env[i, :], dz, int(j))


def cyst_masks(
    x: np.ndarray,
    z: np.ndarray,
    centre: tuple[float, float],
    radius: float,
    inner: float = 0.8,
    gap: float = 1.2,
) -> tuple[np.ndarray, np.ndarray]:
    """Inside (a disc of ``inner * radius``) and background (an annulus from ``gap * radius``
    with the same area) masks of a circular cyst, on the ``(n_x, n_z)`` grid."""
    r = np.hypot(x[:, None] - centre[0], z[None, :] - centre[1])
    r_in = inner * radius
    r0 = gap * radius
    r1 = math.sqrt(r0**2 + r_in**2)  # equal areas
    inside, outside = r <= r_in, (r >= r0) & (r <= r1)
    if inside.sum() < 4 or outside.sum() < 4:
        raise InputError(f"cyst at {centre} (radius {radius}) has too few pixels on this grid")
    return inside, outside


def _regions(envelope: np.ndarray, inside: np.ndarray, outside: np.ndarray):
    env = np.abs(np.asarray(envelope)).astype(np.float64)
    a, b = env[inside], env[outside]
    if a.size < 2 or b.size < 2:
        raise InputError("each region needs at least 2 pixels")
    return a, b


def contrast_db(envelope: np.ndarray, inside: np.ndarray, outside: np.ndarray) -> float:
    """``20 log10(mu_in / mu_out)`` of the envelope."""
    a, b = _regions(envelope, inside, outside)
    return float(20 * np.log10(max(a.mean(), 1e-30) / max(b.mean(), 1e-30)))


def cnr_db(envelope: np.ndarray, inside: np.ndarray, outside: np.ndarray) -> float:
    """``20 log10(|mu_in - mu_out| / sqrt((var_in + var_out) / 2))``."""
    a, b = _regions(envelope, inside, outside)
    noise = math.sqrt((a.var() + b.var()) / 2)
    return float(20 * np.log10(max(abs(a.mean() - b.mean()), 1e-30) / max(noise, 1e-30)))


def gcnr(a: np.ndarray, b: np.ndarray, bins: int = 100) -> float:
    """Generalised CNR of two samples (e.g. the envelope inside and outside a cyst):
    ``1 - sum_k min(p_a(k), p_b(k))`` over a common histogram of ``bins`` bins."""
    a = np.abs(np.asarray(a)).astype(np.float64).ravel()
    b = np.abs(np.asarray(b)).astype(np.float64).ravel()
    if a.size < 2 or b.size < 2:
        raise InputError("gCNR needs at least 2 values in each region")
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    if hi <= lo:
        return 0.0
    edges = np.linspace(lo, hi, bins + 1)
    pa = np.histogram(a, edges)[0] / a.size
    pb = np.histogram(b, edges)[0] / b.size
    return float(1 - np.minimum(pa, pb).sum())


def speckle_snr(envelope: np.ndarray, region: np.ndarray | None = None) -> float:
    """``mean / std`` of the envelope (in ``region`` when given)."""
    env = np.abs(np.asarray(envelope)).astype(np.float64)
    vals = env[region] if region is not None else env.ravel()
    if vals.size < 2 or vals.std() == 0:
        raise InputError("speckle SNR needs a region of at least 2 pixels that vary")
    return float(vals.mean() / vals.std())
