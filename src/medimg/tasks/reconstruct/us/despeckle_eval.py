"""Speckle SNR and edge width of B-mode images before and after despeckling.

- Speckle SNR (:func:`medimg.metrics.ultrasound.speckle_snr`): mean / std of the *envelope*,
  i.e. of the de-logged image (an 8-bit B-mode's dynamic range is not stored; ``DELOG_DB`` = 60
  dB is assumed, the same before and after), in homogeneous windows. On real images the windows
  are chosen reproducibly on the input: the lowest local variance of the log image among
  windows fully inside the image region and not dark (anechoic or black areas have no speckle).
- Edge width: the 10-90 % rise distance (pixels) of a profile across a boundary. Speckle makes
  a single profile useless, so each profile is the mean of ``2 * half_len + 1`` parallel ones
  along the edge. On real images the edges are the strongest gradient maxima of the smoothed
  input, kept apart from each other; the same profiles are read before and after.
- A classical baseline at the same speckle SNR gain: the median filter (scipy) or non-local
  means (scikit-image) whose strength gives the nearest gain, for a fair edge comparison.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medimg.metrics.ultrasound import speckle_snr

__all__ = [
    "DELOG_DB",
    "baseline_at_gain",
    "delog",
    "edge_profile",
    "edge_width",
    "homogeneous_windows",
    "is_step",
    "mean_speckle_snr",
    "profile_width",
    "strong_edges",
]

DELOG_DB = 60.0


def delog(image01: np.ndarray, dynamic_range: float = DELOG_DB) -> np.ndarray:
    """Envelope (0..1 of its peak) of a log-compressed image in [0, 1]."""
    return 10 ** ((np.asarray(image01, np.float64) - 1) * dynamic_range / 20)


def homogeneous_windows(image: np.ndarray, mask: np.ndarray, size: int = 24, count: int = 6,
                        min_level: float = 0.08) -> list[tuple[slice, slice]]:  # fmt: skip
    """``count`` non-overlapping ``size`` x ``size`` windows of the most uniform echogenicity
    (lowest variance of the image smoothed over about a quarter window: speckle itself is
    not penalised, a boundary or a gradient is), fully inside ``mask``, with a mean above
    ``min_level`` and almost no black (< 2 %) or saturated (< 1 %) pixels."""
    img = np.asarray(image, np.float64)
    smooth = ndimage.gaussian_filter(img, size / 6)
    mean = ndimage.uniform_filter(img, size)
    var = ndimage.uniform_filter(smooth**2, size) - ndimage.uniform_filter(smooth, size) ** 2
    black = ndimage.uniform_filter((img <= 1 / 255).astype(float), size)
    sat = ndimage.uniform_filter((img >= 254 / 255).astype(float), size)
    inside = ndimage.minimum_filter(mask.astype(np.uint8), size) > 0
    ok = inside & (mean > min_level) & (black < 0.02) & (sat < 0.01)
    score = np.where(ok, var, np.inf)
    taken = np.zeros(img.shape, bool)
    out: list[tuple[slice, slice]] = []
    h = size // 2
    for flat in np.argsort(score, axis=None):
        if len(out) >= count or not np.isfinite(score.flat[flat]):
            break
        i, k = np.unravel_index(flat, img.shape)
        if i < h or k < h:
            continue
        win = (slice(i - h, i - h + size), slice(k - h, k - h + size))
        if taken[win].any():
            continue
        taken[win] = True
        out.append(win)
    return out


def mean_speckle_snr(image01: np.ndarray, windows: list[tuple[slice, slice]]) -> float:
    """Mean over ``windows`` of the de-logged image's speckle SNR."""
    env = delog(image01)
    return float(np.mean([speckle_snr(env[w]) for w in windows]))


def profile_width(profile: np.ndarray, spacing: float = 1.0) -> float:
    """10-90 % rise distance of a step profile: least-squares fit of a Gaussian-blurred step
    ``lo + (hi - lo) * Phi((t - t0) / sigma)``, width ``2.563 sigma``. A fit, not the first
    crossings: residual speckle in an averaged profile moves crossings by several pixels.
    NaN when the fit fails or the step is too small."""
    from scipy.optimize import curve_fit
    from scipy.special import ndtr

    p = np.asarray(profile, np.float64)
    t = np.arange(p.size, dtype=np.float64)
    q = max(2, p.size // 4)
    lo, hi = p[:q].mean(), p[-q:].mean()
    if abs(hi - lo) < 1e-6:
        return float("nan")

    def model(t, lo, hi, t0, sig):
        return lo + (hi - lo) * ndtr((t - t0) / sig)

    try:
        popt, _ = curve_fit(model, t, p, p0=(lo, hi, p.size / 2, 2.0),
                            bounds=([-np.inf, -np.inf, 0, 0.05], [np.inf, np.inf, p.size, p.size]))  # fmt: skip
    except (RuntimeError, ValueError):
        return float("nan")
    return float(2 * 1.2815515655446004 * popt[3] * spacing)


def edge_profile(image: np.ndarray, edge: tuple[float, float, float], half_len: int = 12,
                 half_width: int = 8) -> np.ndarray:  # fmt: skip
    """Mean of ``2 * half_width + 1`` parallel profiles across ``edge`` = (x, z, normal angle),
    sampled every half pixel over ``+-half_len`` pixels."""
    x, z, th = edge
    t = np.arange(-half_len, half_len + 1, 0.5)
    s = np.arange(-half_width, half_width + 1)
    nx, nz = np.cos(th), np.sin(th)
    px = x + t[None, :] * nx - s[:, None] * nz
    pz = z + t[None, :] * nz + s[:, None] * nx
    return ndimage.map_coordinates(np.asarray(image, np.float64), [px, pz], order=1).mean(0)


def is_step(profile: np.ndarray, min_contrast: float = 0.1) -> bool:
    """A step between two plateaus (first and last quarter), not a thin line or a peak: the
    profile leaves the plateaus' range by less than a third of the step."""
    q = max(2, profile.size // 4)
    lo, hi = sorted((profile[:q].mean(), profile[-q:].mean()))
    step = hi - lo
    out = max(profile.max() - hi, 0) + max(lo - profile.min(), 0)
    return step >= min_contrast and out < step / 3


def strong_edges(image: np.ndarray, mask: np.ndarray, count: int = 8, half_len: int = 12,
                 min_gap: int = 30, sigma: float = 3.0) -> list[tuple[float, float, float]]:  # fmt: skip
    """``count`` step edges ``(x, z, normal angle)`` of the largest smoothed-gradient
    magnitude (thin lines and peaks skipped, :func:`is_step`), at least ``min_gap`` pixels
    apart and far enough inside ``mask`` for their profiles."""
    sm = ndimage.gaussian_filter(np.asarray(image, np.float64), sigma)
    gx, gz = ndimage.sobel(sm, 0), ndimage.sobel(sm, 1)
    mag = np.hypot(gx, gz)
    inside = ndimage.binary_erosion(mask, np.ones((2 * half_len + 3,) * 2))
    mag = np.where(inside, mag, 0)
    order = np.argsort(mag, axis=None)[::-1]
    out: list[tuple[float, float, float]] = []
    for flat in order[:50_000]:
        if len(out) >= count or mag.flat[flat] <= 0:
            break
        i, k = np.unravel_index(flat, mag.shape)
        if any(np.hypot(i - a, k - b) < min_gap for a, b, _ in out):
            continue
        edge = (float(i), float(k), float(np.arctan2(gz[i, k], gx[i, k])))
        if is_step(edge_profile(image, edge, half_len)):
            out.append(edge)
    return out


def edge_width(image: np.ndarray, edge: tuple[float, float, float], half_len: int = 12,
               half_width: int = 8) -> float:  # fmt: skip
    """10-90 % width (pixels) of the mean profile across ``edge`` = (x, z, normal angle)."""
    return profile_width(edge_profile(image, edge, half_len, half_width), 0.5)


def baseline_at_gain(image: np.ndarray, mask: np.ndarray, windows, target_gain: float,
                     method: str = "median") -> tuple[np.ndarray, str, float]:  # fmt: skip
    """The ``method`` ("median" or "nlm") filtering of ``image`` whose speckle SNR gain over the
    input in ``windows`` is nearest ``target_gain``: ``(filtered, setting, gain)``."""
    base = mean_speckle_snr(image, windows)
    img = np.asarray(image, np.float64)
    if method == "median":
        settings = [(f"median {k}x{k}", lambda k=k: ndimage.median_filter(img, k))
                    for k in (3, 5, 7, 9, 11, 13, 15, 19, 23)]  # fmt: skip
    else:
        from skimage.restoration import denoise_nl_means, estimate_sigma

        sig = float(estimate_sigma(img))
        settings = [(f"NLM h={h:.1f} sigma", lambda h=h: denoise_nl_means(
            img, h=h * sig, sigma=sig, patch_size=5, patch_distance=6, fast_mode=True))
            for h in (0.6, 1.0, 1.5, 2.2, 3.2, 4.5)]  # fmt: skip
    best = None
    for name, run in settings:
        out = np.where(mask, run(), img)
        gain = mean_speckle_snr(out, windows) / base
        if best is None or abs(np.log(gain / target_gain)) < abs(np.log(best[2] / target_gain)):
            best = (out, name, gain)
        if gain > target_gain:
            break
    return best
