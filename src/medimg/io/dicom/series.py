"""Grouping DICOM frames into series, listing series, and picking one.

Series are grouped by SeriesInstanceUID and listed in a fixed order: by SeriesNumber (missing
numbers last), then by SeriesInstanceUID. Indices passed as ``series=`` refer to that order,
which is also what ``medimg info DIR`` prints.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medimg.errors import DicomError
from medimg.io.dicom.geometry import orientation_vectors
from medimg.io.dicom.headers import Frame, header_values, number, scan
from medimg.typing import PathType


@dataclass(frozen=True)
class SeriesInfo:
    """A one-glance summary of a series, from headers only.

    ``shape`` is ``(X, Y, Z)`` = (columns, rows, frames) as stored, before any gap resampling;
    ``spacing`` is ``(dx, dy, dz)`` mm with ``dz`` the median step between slice positions.
    """

    uid: str
    modality: str
    description: str
    n_files: int
    n_frames: int
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    number: int | None = None
    study_uid: str = ""

    def line(self) -> str:
        """One human-readable line: UID, modality, description, shape, spacing."""
        shape = "x".join(str(s) for s in self.shape)
        spacing = "x".join(f"{s:.3g}" for s in self.spacing)
        files = f"{self.n_files} file{'s' if self.n_files != 1 else ''}"
        return (
            f"{self.uid}  {self.modality}  '{self.description}'  {shape} voxels  "
            f"{spacing} mm  ({files}, {self.n_frames} frames)"
        )


def _sort_key(frames: list[Frame]) -> tuple[float, str]:
    number_ = number(frames[0].ds, "SeriesNumber", math.inf)
    return number_, str(frames[0].ds.get("SeriesInstanceUID", ""))  # type: ignore[return-value]


def group_series(frames: list[Frame]) -> list[list[Frame]]:
    """Frames grouped by SeriesInstanceUID, in the documented series order."""
    groups: dict[str, list[Frame]] = defaultdict(list)
    for f in frames:
        groups[str(f.ds.get("SeriesInstanceUID", ""))].append(f)
    return sorted(groups.values(), key=_sort_key)


def _slice_step(frames: list[Frame]) -> float:
    """Median step between sorted slice positions; the slice thickness for a single slice."""
    placed = [f for f in frames if f.iop is not None and f.ipp is not None]
    if len(placed) > 1:
        normal = orientation_vectors(placed[0].iop)[2]  # type: ignore[arg-type]
        steps = np.diff(np.sort([np.dot(f.ipp, normal) for f in placed]))  # type: ignore[arg-type]
        steps = steps[steps > 1e-6]
        if steps.size:
            return float(np.median(steps))
    return frames[0].thickness or 1.0


def summarize(frames: list[Frame]) -> SeriesInfo:
    """The :class:`SeriesInfo` of one group of frames."""
    ds = frames[0].ds
    dy, dx = frames[0].pixel_spacing or (1.0, 1.0)
    series_number = number(ds, "SeriesNumber")
    return SeriesInfo(
        uid=str(ds.get("SeriesInstanceUID", "")),
        modality=str(ds.get("Modality", "OT")),
        description=str(ds.get("SeriesDescription", "")),
        n_files=len({f.path for f in frames}),
        n_frames=len(frames),
        shape=(frames[0].cols, frames[0].rows, len(frames)),
        spacing=(dx, dy, _slice_step(frames)),
        number=None if series_number is None else int(series_number),
        study_uid=str(ds.get("StudyInstanceUID", "")),
    )


def list_series(folder: PathType, unreadable: list[str] | None = None) -> list[SeriesInfo]:
    """Summaries of the image series under ``folder`` (recursive), in ``series=`` index order.

    Reads headers only (stopping before the pixel data). Non-DICOM files and DICOM objects
    without pixels (DICOMDIR, SR, RTSTRUCT...) are skipped. A damaged file is an error, unless
    ``unreadable`` is a list, which then collects one message per damaged file.

    Examples
    --------
    >>> for i, s in enumerate(list_series("study/")):  # doctest: +SKIP
    ...     print(i, s.line())
    """
    with header_values(Path(folder)):
        frames = scan(Path(folder), pixels=False, unreadable=unreadable)
        return [summarize(g) for g in group_series(frames)]


def _menu(groups: list[list[Frame]], limit: int = 4) -> str:
    items = [f"[{i}] {s.modality} '{s.description}' {s.n_frames} frames"
             for i, s in enumerate(summarize(g) for g in groups[:limit])]  # fmt: skip
    return "; ".join(items) + ("; ..." if len(groups) > limit else "")


def select_series(groups: list[list[Frame]], series: str | int | None, source: Path) -> list[Frame]:
    """The frames of the series picked by UID or index; a one-line error if that is ambiguous.

    A string is matched against SeriesInstanceUIDs first, then read as an index if it is one.
    """
    if series is None:
        if len(groups) == 1:
            return groups[0]
        raise DicomError(
            f"folder holds {len(groups)} DICOM series ({_menu(groups)}); pick one with "
            f"series=UID or index 0..{len(groups) - 1} (list them with: medimg info {source})",
            source,
        )
    if isinstance(series, str):
        for g in groups:
            if str(g[0].ds.get("SeriesInstanceUID", "")) == series:
                return g
        if not series.strip().isdigit():
            raise DicomError(
                f"no series with UID {series} here ({_menu(groups)}); "
                f"list them with: medimg info {source}",
                source,
            )
        series = int(series)
    if isinstance(series, bool) or not 0 <= int(series) < len(groups):
        raise DicomError(
            f"series index {series} out of range: {len(groups)} series here, 0..{len(groups) - 1} "
            f"({_menu(groups)})",
            source,
        )
    return groups[int(series)]
