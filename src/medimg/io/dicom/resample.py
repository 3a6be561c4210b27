"""Resampling a loaded stack onto a regular orthogonal grid (gantry tilt, uneven spacing).

Both are opt-in (``tilt="resample"``, ``allow_gaps=True``) and both use linear interpolation:
gantry tilt shifts every slice within its own plane (a per-slice 2D shift), uneven spacing
interpolates along the slice normal between the two nearest acquired slices.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def shift_slices(volume: np.ndarray, shifts: np.ndarray) -> None:
    """Shift slice ``k`` of ``volume`` (C, X, Y, Z) in place by ``shifts[k]`` = (dx, dy) pixels.

    New voxel ``(i, j)`` takes the old value at ``(i - dx, j - dy)``; voxels that come from
    outside the slice get the volume's minimum (air / background).
    """
    fill = float(volume.min())
    for k, (sx, sy) in enumerate(np.asarray(shifts, dtype=np.float64)):
        if abs(sx) < 1e-6 and abs(sy) < 1e-6:
            continue
        for c in range(volume.shape[0]):
            plane = volume[c, :, :, k]
            plane[...] = ndimage.shift(plane, (sx, sy), order=1, mode="constant", cval=fill)


def regrid_along_normal(
    volume: np.ndarray, positions: np.ndarray, targets: np.ndarray
) -> np.ndarray:
    """Linear interpolation of slices at sorted ``positions`` (mm) onto ``targets`` (mm).

    Returns a new ``(C, X, Y, len(targets))`` float32 array laid out like ``volume``.
    """
    c, x, y, _ = volume.shape
    out = np.empty((c, len(targets), y, x), np.float32).transpose(0, 3, 2, 1)
    upper = np.clip(np.searchsorted(positions, targets, side="right"), 1, len(positions) - 1)
    lower = upper - 1
    weight = (targets - positions[lower]) / (positions[upper] - positions[lower])
    for k, (lo, hi, w) in enumerate(zip(lower, upper, np.clip(weight, 0.0, 1.0))):
        dst = out[:, :, :, k]
        np.multiply(volume[:, :, :, lo], np.float32(1.0 - w), out=dst)
        dst += np.float32(w) * volume[:, :, :, hi]
    return out
