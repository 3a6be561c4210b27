"""Reading DICOM images: single files, series folders, enhanced multi-frame, compressed syntaxes.

The pipeline: headers of every file (:mod:`.headers`, :mod:`.multiframe`) -> frames grouped into
series and one picked (:mod:`.series`) -> frames checked and sorted along the slice normal into a
regular grid (:mod:`.stack`) -> pixels decoded and rescaled into one preallocated float32 array
(:mod:`.pixels`) -> optional resampling for gantry tilt or gaps (:mod:`.resample`).

Representation
--------------
- Array ``(C, X, Y, Z)`` float32 with X = DICOM column index, Y = row index, Z = slice, ordered
  by position along the slice normal (row x column direction), so the affine's third column is
  ``+normal * spacing``. C is 1 (3 for colour). Each ``[c, :, :, k]`` plane is contiguous, which
  makes the array Fortran-ordered per channel (numpy and torch handle this transparently).
- Values are RescaleSlope * stored + RescaleIntercept, per slice (CT in HU); enhanced
  multi-frame takes them per frame from PixelValueTransformationSequence. Nothing else is
  applied: MONOCHROME1 is not inverted, no VOI/window, PixelPaddingValue kept as is.
- Any image with plane geometry (ImageOrientationPatient + ImagePositionPatient) is 3D, including
  a single slice: ``(C, X, Y, 1)`` whose third affine column is the normal scaled by
  SliceThickness or SpacingBetweenSlices (1 mm if neither; ``meta["slice_thickness_unknown"]``).
  Images without plane geometry (projection radiographs, secondary captures) are 2D
  ``(C, X, Y)`` on ITK's default identity LPS orientation with PixelSpacing (or
  ImagerPixelSpacing).
- The affine comes from :mod:`medimg.io.dicom.geometry` (LPS -> RAS+).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import MedimgError
from medimg.io.dicom.headers import Frame, header_values, scan
from medimg.io.dicom.pixels import allocate, check_stored_sizes, load_pixels
from medimg.io.dicom.resample import regrid_along_normal, shift_slices
from medimg.io.dicom.series import group_series, select_series
from medimg.io.dicom.stack import Grid, build_grid
from medimg.io.image import Image
from medimg.io.inputs import check_allocation
from medimg.typing import PathType

__all__ = ["read_dicom"]


def _meta(frames: list[Frame], source: Path, grid: Grid) -> dict[str, Any]:
    ds = frames[0].ds
    meta: dict[str, Any] = {
        "series_uid": str(ds.get("SeriesInstanceUID", "")),
        "study_uid": str(ds.get("StudyInstanceUID", "")),
        "description": str(ds.get("SeriesDescription", "")),
        "source": str(source),
        "patient_id": str(ds.get("PatientID", "")),
        "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "")),
        "n_files": len({f.path for f in frames}),
        "transfer_syntax": str(ds.file_meta.get("TransferSyntaxUID", "")),
    }
    meta.update(grid.notes)
    return meta


def read_dicom(
    path: PathType,
    *,
    series: str | int | None = None,
    allow_gaps: bool = False,
    tilt: str = "refuse",
) -> Image:
    """Read a DICOM file or a series folder into a float32 :class:`Image` (see module notes).

    Parameters
    ----------
    path
        A DICOM file (single- or multi-frame) or a folder, searched recursively; non-DICOM files
        and DICOM objects without pixels (DICOMDIR, SR, RTSTRUCT) in it are ignored.
    series
        Which series to read when the folder holds several: a SeriesInstanceUID, or an index
        into :func:`medimg.io.dicom.series.list_series` order (SeriesNumber, then UID). Without
        it, a folder with several series is an error; series are never merged.
    allow_gaps
        Missing slices or uneven spacing are an error by default (naming the two slices around
        the gap). ``True`` resamples linearly along the normal onto a regular grid at the typical
        (median) spacing; ``meta["gaps_resampled"]`` records it.
    tilt
        ``"refuse"`` (default) raises for gantry-tilted stacks (slice positions stepping off the
        normal), giving the angle; ``"resample"`` shifts each slice in-plane onto a regular
        orthogonal grid (``meta["tilt_resampled_deg"]``; linear interpolation, voxels shifted in
        from outside a slice get the volume's minimum). Never a sheared or wrong affine.

    Returns
    -------
    Image
        ``(C, X, Y, Z)`` float32 with modality from the header and ``meta``: ``series_uid``,
        ``study_uid``, ``description``, ``source``, ``patient_id``, ``frame_of_reference_uid``,
        ``n_files``, ``transfer_syntax`` (plus resampling notes).

    Raises
    ------
    DicomError, GeometryError, ImageReadError
        One line naming the file and what to do: not DICOM, no pixel data (SR, RTSTRUCT...),
        truncated, unsupported transfer syntax (which plugin to install), NaN/Inf pixel data,
        several series, mixed sizes/orientations, duplicate positions, gaps, gantry tilt.

    Examples
    --------
    >>> ct = read_dicom("patient1/CT/")  # doctest: +SKIP
    >>> ct.array.shape, ct.spacing  # doctest: +SKIP
    ((1, 512, 512, 120), (0.7, 0.7, 2.5))
    """
    source = Path(path)
    with _named(source), header_values(source):
        return _read(source, series=series, allow_gaps=allow_gaps, tilt=tilt)


@contextmanager
def _named(source: Path) -> Iterator[None]:
    """Every refusal names a file: one raised deep down without a path gets the source's."""
    try:
        yield
    except MedimgError as e:
        if e.path is None:
            raise type(e)(str(e), source) from e
        raise


def _read(source: Path, *, series: str | int | None, allow_gaps: bool, tilt: str) -> Image:
    chosen = select_series(group_series(scan(source, pixels=True)), series, source)
    grid = build_grid(chosen, source, allow_gaps=allow_gaps, tilt=tilt)
    first = grid.frames[0]
    channels = int(first.ds.get("SamplesPerPixel", 1) or 1)
    check_stored_sizes(grid.frames)  # header sizes against the files, before allocating
    n_out = len(grid.frames) if grid.targets is None else len(grid.frames) + len(grid.targets)
    shape = (channels, first.cols, first.rows, n_out)
    check_allocation(shape, np.float32, what="the DICOM volume", path=source)
    volume = allocate(channels, first.cols, first.rows, len(grid.frames))
    load_pixels(grid.frames, volume)
    if grid.shifts is not None:
        shift_slices(volume, grid.shifts)
    if grid.targets is not None:
        volume = regrid_along_normal(volume, grid.positions, grid.targets)  # type: ignore[arg-type]
    array = volume if grid.is_3d else volume[..., 0]
    modality = str(first.ds.get("Modality", "") or "OT")
    return Image(array, grid.affine, modality=modality, meta=_meta(grid.frames, source, grid))
