"""Interpolation baselines on the thin grid of :func:`~.degrade.thin_affine`.

``cubic``: cubic B-spline interpolation (scipy ``ndimage.zoom``, ``grid_mode=True`` puts the
output voxel centres exactly where the thin grid has them). ``sinc``: band-limited (Fourier)
interpolation by zero-padding the spectrum; the DCT-II (scipy.fft) is the spectrum of the
mirror-extended signal, so the padding interpolates without wrap-around ringing and its grid is
aligned on voxel edges as ours is.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft, ndimage

from medimg.tasks.superres.degrade import check_factor

__all__ = ["INTERPOLATORS", "cubic_upsample", "sinc_upsample", "upsample"]


def cubic_upsample(thick: np.ndarray, axis: int, factor: int) -> np.ndarray:
    """``factor`` times more slices along ``axis`` by cubic B-spline interpolation."""
    factor = check_factor(factor)
    zoom = [1.0] * thick.ndim
    zoom[axis] = float(factor)
    out = ndimage.zoom(np.asarray(thick, np.float32), zoom, order=3, mode="nearest",
                       grid_mode=True)  # fmt: skip
    return out.astype(np.float32)


def sinc_upsample(thick: np.ndarray, axis: int, factor: int) -> np.ndarray:
    """``factor`` times more slices along ``axis`` by spectral zero-padding (DCT-II)."""
    factor = check_factor(factor)
    n = thick.shape[axis]
    coeffs = fft.dct(np.asarray(thick, np.float64), type=2, norm="ortho", axis=axis)
    pad = [(0, 0)] * thick.ndim
    pad[axis] = (0, n * (factor - 1))
    padded = np.pad(coeffs, pad)
    out = fft.idct(padded, type=2, norm="ortho", axis=axis) * math.sqrt(factor)
    return out.astype(np.float32)


INTERPOLATORS = {"cubic": cubic_upsample, "sinc": sinc_upsample}


def upsample(thick: np.ndarray, axis: int, factor: int, method: str = "cubic") -> np.ndarray:
    """The interpolation baseline ``method`` (``cubic`` or ``sinc``)."""
    return INTERPOLATORS[method](thick, axis, factor)
