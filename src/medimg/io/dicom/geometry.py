"""DICOM plane geometry <-> our RAS+ affine, in one place for the reader and the writer.

DICOM conventions (PS3.3 C.7.6.2): ``ImageOrientationPatient`` holds the row direction (the
direction of increasing *column* index) then the column direction (increasing *row* index), both
in LPS; ``PixelSpacing`` is ``[row spacing, column spacing]``, i.e. ``[dy, dx]``. Our array axes
are ``(X, Y, Z) = (column, row, slice)``, so voxel (i, j, k) sits at
``IPP_0 + i * dx * row_dir + j * dy * col_dir + k * step`` (LPS mm).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medimg.errors import InputError
from medimg.io.image import LPS_TO_RAS

#: Angles (degrees) below this are treated as numerical noise, not tilt or obliquity errors.
ANGLE_TOLERANCE_DEG = 0.01


def orientation_vectors(iop: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row direction, column direction and slice normal (row x col), unit vectors in LPS."""
    v = np.asarray(iop, dtype=np.float64)
    if v.shape != (6,) or not np.all(np.isfinite(v)):
        raise InputError(f"ImageOrientationPatient must be 6 finite numbers, got {list(iop)}")
    row, col = v[:3], v[3:]
    nr, nc = np.linalg.norm(row), np.linalg.norm(col)
    if nr < 1e-6 or nc < 1e-6:
        raise InputError(f"ImageOrientationPatient has a zero vector: {list(iop)}")
    row, col = row / nr, col / nc
    normal = np.cross(row, col)
    if np.linalg.norm(normal) < 1e-3:  # no plane: the affine would be singular (NaN normal)
        raise InputError(f"ImageOrientationPatient has parallel row and column directions: "
                         f"{list(iop)}")  # fmt: skip
    return row, col, normal / np.linalg.norm(normal)


def lps_affine(
    iop: Sequence[float],
    pixel_spacing: Sequence[float],
    first_position: Sequence[float],
    slice_step: Sequence[float] | None = None,
) -> np.ndarray:
    """4x4 LPS affine of a stack of slices.

    ``slice_step`` is the LPS vector from one slice's ImagePositionPatient to the next; for a
    single slice pass ``None`` and the normal (scaled by 1 mm) is used.
    """
    row, col, normal = orientation_vectors(iop)
    dy, dx = (float(s) for s in pixel_spacing)
    a = np.eye(4)
    a[:3, 0] = row * dx
    a[:3, 1] = col * dy
    a[:3, 2] = normal if slice_step is None else np.asarray(slice_step, dtype=np.float64)
    a[:3, 3] = np.asarray(first_position, dtype=np.float64)
    return a


def ras_affine(
    iop: Sequence[float],
    pixel_spacing: Sequence[float],
    first_position: Sequence[float],
    slice_step: Sequence[float] | None = None,
) -> np.ndarray:
    """Like :func:`lps_affine`, converted to our RAS+ convention."""
    return LPS_TO_RAS @ lps_affine(iop, pixel_spacing, first_position, slice_step)


def plane_geometry(affine_ras: np.ndarray, n_slices: int) -> dict[str, object]:
    """DICOM plane attributes for each slice of an image with the given RAS+ affine.

    Returns ``iop`` (6 floats), ``pixel_spacing`` ([dy, dx]), ``slice_spacing`` (mm, along the
    normal), ``positions`` (``(n_slices, 3)`` LPS IPPs). Raises :class:`InputError` for grids that
    a DICOM series cannot describe: non-perpendicular in-plane axes, or slices that do not step
    along the normal (sheared affine; resample first).
    """
    lps = LPS_TO_RAS @ np.asarray(affine_ras, dtype=np.float64)
    cols = lps[:3, :3]
    dx, dy, dz = np.linalg.norm(cols, axis=0)
    row, col, step = cols[:, 0] / dx, cols[:, 1] / dy, cols[:, 2]
    if abs(float(row @ col)) > np.sin(np.deg2rad(ANGLE_TOLERANCE_DEG)):
        raise InputError(
            "in-plane axes are not perpendicular; resample the image before writing DICOM"
        )
    normal = np.cross(row, col)
    along = float(step @ normal)
    if n_slices > 1 and np.linalg.norm(step - along * normal) > dz * np.sin(
        np.deg2rad(ANGLE_TOLERANCE_DEG)
    ):
        raise InputError(
            "slices do not step along the slice normal (sheared/tilted grid); "
            "DICOM series cannot store this geometry, resample onto a regular grid first"
        )
    positions = lps[:3, 3][None, :] + np.arange(n_slices)[:, None] * step[None, :]
    return {
        "iop": [float(v) for v in (*row, *col)],
        "pixel_spacing": [float(dy), float(dx)],
        "slice_spacing": abs(along) if n_slices > 1 else float(dz),
        "positions": positions,
    }


#: ``PhysicalUnitsX/YDirection`` code for centimetres (DICOM PS3.3 C.8.5.5.1.15).
ULTRASOUND_UNITS_CM = 3


def ultrasound_region_spacing(ds: object) -> list[float] | None:
    """``[dy, dx]`` in mm from the largest ultrasound region calibrated in cm in both directions
    (``SequenceOfUltrasoundRegions``): ultrasound files often carry their spacing only there.
    ``None`` when no region is calibrated in cm."""
    best, best_area = None, 0
    for region in getattr(ds, "SequenceOfUltrasoundRegions", None) or ():
        try:
            units = (int(region.PhysicalUnitsXDirection), int(region.PhysicalUnitsYDirection))
            dx, dy = abs(float(region.PhysicalDeltaX)), abs(float(region.PhysicalDeltaY))
            area = (int(region.RegionLocationMaxX1) - int(region.RegionLocationMinX0)) * (
                int(region.RegionLocationMaxY1) - int(region.RegionLocationMinY0)
            )
        except (AttributeError, TypeError, ValueError):
            continue
        if (
            units == (ULTRASOUND_UNITS_CM, ULTRASOUND_UNITS_CM)
            and dx > 0
            and dy > 0
            and area > best_area
        ):
            best, best_area = [dy * 10.0, dx * 10.0], area
    return best
