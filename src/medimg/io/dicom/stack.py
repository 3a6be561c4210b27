"""From a series' frames to a regular grid: consistency checks, sorting, gaps and gantry tilt.

Slices are ordered by their distance along the slice normal, ``d = IPP . (row x col)``, never by
file name or InstanceNumber, so the third array axis always points along the normal. The grid is
refused (one-line :class:`GeometryError` naming the files) when the frames disagree in size,
orientation or pixel spacing, repeat a position, leave gaps (unless ``allow_gaps``) or step off
the normal as in gantry-tilted CT (unless ``tilt="resample"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medimg.errors import DicomError, GeometryError, InputError
from medimg.io.dicom.geometry import ANGLE_TOLERANCE_DEG, orientation_vectors, ras_affine
from medimg.io.dicom.headers import Frame, number
from medimg.io.image import LPS_TO_RAS
from medimg.io.inputs import check_allocation

IOP_TOLERANCE = 1e-4  # max |difference| of direction cosines still called "the same"
SPACING_RTOL = 1e-3  # relative pixel-spacing difference still called "the same"
POSITION_ATOL_MM = 0.02  # rounding noise of stored positions (DS strings)
GAP_RTOL = 0.01  # a step differing from the typical spacing by more than this is a gap
TILT_OPTIONS = ("refuse", "resample")


@dataclass
class Grid:
    """Where each sorted frame goes, and how (if at all) it must be resampled."""

    frames: list[Frame]  # in output slice order
    affine: np.ndarray  # RAS+ 4x4 of the output grid
    is_3d: bool = True
    positions: np.ndarray | None = None  # (Z,) frame distances along the normal (mm)
    shifts: np.ndarray | None = None  # (Z, 2) in-plane shifts in pixels (x, y), tilt only
    targets: np.ndarray | None = None  # (Z',) regular positions to interpolate onto, gaps only
    notes: dict[str, object] = field(default_factory=dict)


def label(frame: Frame, source: Path) -> str:
    """Short name of a frame for messages: its path relative to the source (+ frame number)."""
    try:
        name = str(frame.path.relative_to(source)) if source.is_dir() else frame.path.name
    except ValueError:
        name = frame.path.name
    return name if frame.index is None else f"{name} frame {frame.index + 1}"


def _check_uniform(frames: list[Frame], source: Path) -> None:
    first = frames[0]
    for f in frames[1:]:
        if (f.rows, f.cols) != (first.rows, first.cols):
            raise GeometryError(
                f"mixed image sizes in one series: {first.cols}x{first.rows} in "
                f"{label(first, source)} but {f.cols}x{f.rows} in {label(f, source)}; "
                "move the odd files out or read them separately",
                source,
            )
        if np.abs(np.subtract(f.iop, first.iop)).max() > IOP_TOLERANCE:  # type: ignore[arg-type]
            raise GeometryError(
                f"mixed orientations in one series: ImageOrientationPatient "
                f"{[round(v, 4) for v in first.iop]} in {label(first, source)} but "  # type: ignore[union-attr]
                f"{[round(v, 4) for v in f.iop]} in {label(f, source)} (a localizer mixed in?); "  # type: ignore[union-attr]
                "move the odd files out or read them separately",
                source,
            )
        if not np.allclose(f.pixel_spacing or 1, first.pixel_spacing or 1, rtol=SPACING_RTOL):
            raise GeometryError(
                f"mixed pixel spacing in one series: {first.pixel_spacing} in "
                f"{label(first, source)} but {f.pixel_spacing} in {label(f, source)}; "
                "move the odd files out or read them separately",
                source,
            )


def _flat_grid(frame: Frame) -> Grid:
    """A 2D image without patient-plane geometry: ITK's default (identity LPS) orientation."""
    dy, dx = frame.pixel_spacing or (1.0, 1.0)
    notes = {} if frame.pixel_spacing else {"spacing_unknown": True}
    return Grid([frame], LPS_TO_RAS @ np.diag([dx, dy, 1.0, 1.0]), is_3d=False, notes=notes)


def _frame_stack(frames: list[Frame]) -> Grid:
    """Frames of one multi-frame file without plane geometry (an ultrasound or X-ray cine loop,
    a multi-frame secondary capture): a ``(C, X, Y, T)`` stack in stored frame order on ITK's
    default orientation, as SimpleITK reads them. The third axis is frame number, not space:
    its 1.0 "spacing" is recorded as ``meta["frame_axis"]``, with FrameTime when present."""
    flat = _flat_grid(frames[0])  # its third column is already the 1.0 frame step
    notes: dict[str, object] = {**flat.notes, "frame_axis": "frames (no slice geometry)"}
    frame_time = number(frames[0].ds, "FrameTime")
    if frame_time is not None:
        notes["frame_time_ms"] = frame_time
    return Grid(frames, flat.affine, notes=notes)


def _check_duplicates(frames: list[Frame], d: np.ndarray, source: Path) -> None:
    same = np.flatnonzero(np.diff(d) < POSITION_ATOL_MM / 10)
    if same.size:
        k = int(same[0])
        raise GeometryError(
            f"{same.size} duplicate slice position(s): {label(frames[k], source)} and "
            f"{label(frames[k + 1], source)} both lie at {d[k]:.3f} mm along the normal "
            "(several acquisitions, echoes or time points in one series?); keep one set of files",
            source,
        )


def _tilt(
    frames: list[Frame], d: np.ndarray, normal: np.ndarray, tilt: str, source: Path
) -> tuple[np.ndarray | None, float]:
    """In-plane offsets of each slice from the first, as (x, y) pixel shifts, or None."""
    ipp = np.array([f.ipp for f in frames])
    off = ipp - ipp[0] - np.outer(d - d[0], normal)  # in-plane part of each slice's offset
    drift = float(np.linalg.norm(off, axis=1).max())
    span = float(d[-1] - d[0])
    slope = (off.T @ (d - d[0])) / max(float((d - d[0]) @ (d - d[0])), 1e-12)
    angle = float(np.degrees(np.arctan(np.linalg.norm(slope))))
    if drift <= max(POSITION_ATOL_MM, np.tan(np.radians(ANGLE_TOLERANCE_DEG)) * span):
        return None, 0.0
    if tilt == "refuse":
        raise GeometryError(
            f"gantry tilt: slice positions step {angle:.2f} degrees off the slice normal "
            f"(in-plane drift up to {drift:.2f} mm), so no affine describes the stack; pass "
            "tilt='resample' to resample it onto a regular orthogonal grid",
            source,
        )
    row, col, _ = orientation_vectors(frames[0].iop)  # type: ignore[arg-type]
    dy, dx = frames[0].pixel_spacing or (1.0, 1.0)
    return np.stack([off @ row / dx, off @ col / dy], axis=1), angle


def _gaps(
    frames: list[Frame], d: np.ndarray, allow_gaps: bool, source: Path
) -> tuple[float, np.ndarray | None]:
    """Typical spacing, and regular target positions if the steps are uneven (else None)."""
    steps = np.diff(d)
    typical = float(np.median(steps))
    dev = np.abs(steps - typical)
    bad = np.flatnonzero(dev > max(GAP_RTOL * typical, POSITION_ATOL_MM))
    if not bad.size:
        return float((d[-1] - d[0]) / (len(d) - 1)), None
    if not allow_gaps:
        k = int(bad[np.argmax(dev[bad])])
        raise GeometryError(
            f"uneven slice spacing ({bad.size} irregular step(s)): {steps[k]:.3f} mm between "
            f"{label(frames[k], source)} at {d[k]:.3f} mm and {label(frames[k + 1], source)} at "
            f"{d[k + 1]:.3f} mm along the normal, typical spacing {typical:.3f} mm (missing "
            f"slices?); pass allow_gaps=True to resample onto a regular {typical:.3f} mm grid",
            source,
        )
    # exactly the typical spacing from the first slice; a tail shorter than one step is dropped
    n = int(np.floor(float(d[-1] - d[0]) / typical + GAP_RTOL)) + 1
    shape = (frames[0].cols, frames[0].rows, n)
    check_allocation(shape, np.float32, what="the gap-resampled DICOM volume", path=source)
    return typical, d[0] + np.arange(n) * typical


def build_grid(frames: list[Frame], source: Path, *, allow_gaps: bool, tilt: str) -> Grid:
    """Check and sort a series' frames; the output grid and any resampling it needs."""
    if tilt not in TILT_OPTIONS:
        raise InputError(f"tilt must be one of {TILT_OPTIONS}, got {tilt!r}")
    placed = [f.iop is not None and f.ipp is not None for f in frames]
    if not any(placed):
        if len(frames) == 1:
            return _flat_grid(frames[0])
        if len({f.path for f in frames}) == 1 and all(f.index is not None for f in frames):
            return _frame_stack(frames)
        raise DicomError(
            f"{len(frames)} images without ImagePositionPatient/ImageOrientationPatient (cine, "
            "projections or secondary captures?) cannot be stacked into a volume; read one file",
            source,
        )
    if not all(placed):
        odd = frames[placed.index(False)]
        raise GeometryError(
            f"{label(odd, source)} has no plane position/orientation but other slices do; "
            "move it out of the series folder",
            source,
        )
    _check_uniform(frames, source)
    normal = orientation_vectors(frames[0].iop)[2]  # type: ignore[arg-type]
    dist = np.array([np.dot(f.ipp, normal) for f in frames])  # type: ignore[arg-type]
    order = np.argsort(dist, kind="stable")
    frames, d = [frames[i] for i in order], dist[order]
    first = frames[0]
    grid = Grid(frames, np.eye(4), positions=d)
    if len(frames) == 1:
        step = first.thickness or 1.0
        grid.notes = {} if first.thickness else {"slice_thickness_unknown": True}
    else:
        _check_duplicates(frames, d, source)
        grid.shifts, angle = _tilt(frames, d, normal, tilt, source)
        if grid.shifts is not None:
            grid.notes["tilt_resampled_deg"] = round(angle, 3)
        step, grid.targets = _gaps(frames, d, allow_gaps, source)
        if grid.targets is not None:
            n_new = len(grid.targets)
            grid.notes["gaps_resampled"] = f"{len(d)} slices -> {n_new} at {step:.4g} mm"
    spacing = first.pixel_spacing or (1.0, 1.0)
    grid.affine = ras_affine(first.iop, spacing, first.ipp, normal * step)  # type: ignore[arg-type]
    return grid
