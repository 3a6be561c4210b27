"""Full-reference image-quality metrics (NMSE, PSNR, SSIM), computed the standard way.

They follow the fastMRI evaluation (``fastmri/evaluate.py``): NMSE over the whole volume,
PSNR with a data range, and SSIM averaged over 2D slices with a 7x7 uniform window, K1 = 0.01,
K2 = 0.03. ``data_range`` is keyword-only and required whenever the dtype does not settle it
(HU, k-space magnitudes): published PSNRs differ by many dB depending on it, so it is never
guessed silently. For fastMRI's convention pass ``data_range=gt.max()`` per volume
(:func:`volume_max`).
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

__all__ = [
    "nmse",
    "nmse_slicewise",
    "psnr",
    "psnr_slicewise",
    "ssim",
    "ssim_slicewise",
    "volume_max",
]


def _pair(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    g, p = np.asarray(gt, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if g.shape != p.shape:
        raise ValueError(f"gt and pred must have the same shape, got {g.shape} and {p.shape}")
    return g, p


def volume_max(gt: np.ndarray) -> float:
    """fastMRI's data range: the maximum of the ground-truth volume."""
    return float(np.max(gt))


def nmse(gt: np.ndarray, pred: np.ndarray) -> float:
    """Normalised MSE ``||gt - pred||^2 / ||gt||^2`` over the whole array."""
    g, p = _pair(gt, pred)
    return float(np.linalg.norm(g - p) ** 2 / np.linalg.norm(g) ** 2)


def psnr(gt: np.ndarray, pred: np.ndarray, *, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB over the whole array: ``10 log10(range^2 / MSE)``."""
    g, p = _pair(gt, pred)
    return float(peak_signal_noise_ratio(g, p, data_range=data_range))


def ssim(
    gt: np.ndarray,
    pred: np.ndarray,
    *,
    data_range: float,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Mean SSIM over 2D slices (leading axes are slices; the last two are the image plane).

    A 2D input is one slice. Uniform ``win_size`` window, population covariance off
    (scikit-image defaults), as in fastMRI.
    """
    g, p = _pair(gt, pred)
    g2 = g.reshape(-1, *g.shape[-2:])
    p2 = p.reshape(-1, *p.shape[-2:])
    values = [
        structural_similarity(a, b, data_range=data_range, win_size=win_size, K1=k1, K2=k2)
        for a, b in zip(g2, p2)
    ]
    return float(np.mean(values))


def _slices(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    g, p = _pair(gt, pred)
    return g.reshape(-1, *g.shape[-2:]), p.reshape(-1, *p.shape[-2:])


def _ranges(data_range: float | np.ndarray, n: int) -> np.ndarray:
    r = np.broadcast_to(np.asarray(data_range, dtype=np.float64), (n,))
    if not np.all(r > 0):
        raise ValueError(f"data_range must be positive (one value or one per slice), got {r}")
    return r


def nmse_slicewise(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """NMSE of each 2D slice (leading axes are slices): ``(S,)`` array."""
    g, p = _slices(gt, pred)
    return np.array([nmse(a, b) for a, b in zip(g, p)])


def psnr_slicewise(
    gt: np.ndarray, pred: np.ndarray, *, data_range: float | np.ndarray
) -> np.ndarray:
    """PSNR of each 2D slice: ``(S,)``. ``data_range`` is one value (fastMRI: the volume max,
    :func:`volume_max`) or one per slice (e.g. ``gt.max(axis=(-2, -1))``)."""
    g, p = _slices(gt, pred)
    r = _ranges(data_range, len(g))
    return np.array([psnr(a, b, data_range=float(d)) for a, b, d in zip(g, p, r)])


def ssim_slicewise(
    gt: np.ndarray,
    pred: np.ndarray,
    *,
    data_range: float | np.ndarray,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
) -> np.ndarray:
    """SSIM of each 2D slice: ``(S,)``; :func:`ssim` is their mean for one ``data_range``."""
    g, p = _slices(gt, pred)
    r = _ranges(data_range, len(g))
    return np.array(
        [
            ssim(a, b, data_range=float(d), win_size=win_size, k1=k1, k2=k2)
            for a, b, d in zip(g, p, r)
        ]
    )
