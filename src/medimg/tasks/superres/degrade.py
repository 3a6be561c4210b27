"""Thick slices from thin ones, and the grids that go with them.

Degradation model of a thick-slice acquisition (what ``evaluate`` applies to a reference, and
what ``train`` learns to undo): the slice profile blurs the 1 mm volume along the slice axis (a
Gaussian or a boxcar whose full width at half maximum equals the slice thickness), then only
every ``factor``-th position is kept. Thick slice ``k`` is centred on thin index
``k * factor + (factor - 1) / 2`` and covers thin voxels ``k * factor ... k * factor + factor - 1``,
so the world extent (first voxel's edge to last voxel's edge) is the same on both grids; the
affines say so (:func:`thick_affine`, :func:`thin_affine`).

scipy's ``gaussian_filter1d`` does the blur; the bookkeeping of centres and affines is ours
(no library models a slice profile with its geometry).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from medimg.errors import InputError

__all__ = [
    "PROFILES",
    "check_factor",
    "crop_to_multiple",
    "degrade",
    "thick_affine",
    "thin_affine",
]

PROFILES = ("gaussian", "boxcar")
#: factors the methods accept: 2x (e.g. 2 mm) to 8x (8 mm slices from 1 mm)
MAX_FACTOR = 8


def check_factor(factor: object) -> int:
    """``factor`` as an int in [2, 8], or a one-line :class:`InputError`."""
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer, float)):
        raise InputError(f"factor {factor!r} must be a whole number from 2 to {MAX_FACTOR}")
    if float(factor) != int(factor) or not 2 <= int(factor) <= MAX_FACTOR:
        raise InputError(f"factor {factor} must be a whole number from 2 to {MAX_FACTOR}")
    return int(factor)


def _check_axis(volume: np.ndarray, axis: int) -> int:
    if volume.ndim != 3:
        raise InputError(f"super-resolution needs a 3D volume; got shape {volume.shape}")
    if axis not in (0, 1, 2):
        raise InputError(f"axis {axis} must be 0, 1 or 2")
    return axis


def crop_to_multiple(volume: np.ndarray, axis: int, factor: int) -> np.ndarray:
    """``volume`` without its trailing slices along ``axis`` beyond a multiple of ``factor``
    (the first voxel, hence the affine, stays where it was)."""
    n = volume.shape[axis] // factor * factor
    if n == 0:
        raise InputError(f"{volume.shape[axis]} slices along axis {axis} < factor {factor}")
    return np.take(volume, np.arange(n), axis=axis)


def degrade(volume: np.ndarray, axis: int, factor: int, profile: str = "gaussian") -> np.ndarray:
    """Thick slices of ``volume`` (3D) along ``axis``: slice-profile blur + decimation.

    The slice count along ``axis`` must be a multiple of ``factor`` (:func:`crop_to_multiple`).
    ``profile``: ``gaussian`` (FWHM = ``factor`` voxels) or ``boxcar`` (the mean of the
    ``factor`` thin slices a thick one covers).
    """
    axis, factor = _check_axis(volume, axis), check_factor(factor)
    if profile not in PROFILES:
        raise InputError(f"slice profile {profile!r} must be one of {', '.join(PROFILES)}")
    if volume.shape[axis] % factor:
        raise InputError(f"{volume.shape[axis]} slices are not a multiple of factor {factor}")
    v = np.moveaxis(np.asarray(volume, dtype=np.float32), axis, 0)
    n = v.shape[0] // factor
    if profile == "boxcar":
        thick = v.reshape(n, factor, *v.shape[1:]).mean(axis=1)
    else:
        sigma = factor / (2 * math.sqrt(2 * math.log(2)))
        blurred = ndimage.gaussian_filter1d(v, sigma, axis=0, mode="nearest", truncate=3.0)
        centre = np.arange(n) * factor + (factor - 1) / 2
        lo, hi = np.floor(centre).astype(int), np.ceil(centre).astype(int)
        thick = 0.5 * (blurred[lo] + blurred[hi])  # even factors: centre between two voxels
    return np.moveaxis(thick.astype(np.float32), 0, axis)


def _axis_map(axis: int, scale: float, shift: float) -> np.ndarray:
    m = np.eye(4)
    m[axis, axis], m[axis, 3] = scale, shift
    return m


def thick_affine(affine: np.ndarray, axis: int, factor: int) -> np.ndarray:
    """Affine of :func:`degrade`'s output given the thin volume's ``affine``."""
    return np.asarray(affine, float) @ _axis_map(axis, factor, (factor - 1) / 2)


def thin_affine(affine: np.ndarray, axis: int, factor: int) -> np.ndarray:
    """Affine of a volume with ``factor`` times more slices along ``axis`` over the same extent
    as the thick volume of ``affine`` (the inverse of :func:`thick_affine`)."""
    return np.asarray(affine, float) @ _axis_map(axis, 1 / factor, -(factor - 1) / (2 * factor))
