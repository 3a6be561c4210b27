"""Frames of multi-frame instances: enhanced (functional groups) and legacy (grid offsets).

Enhanced multi-frame objects (Enhanced CT/MR, Legacy Converted Enhanced...) describe each frame
through functional-group macros (PS3.3 C.7.6.16), found in the frame's item of
PerFrameFunctionalGroupsSequence or, when shared by all frames, in SharedFunctionalGroupsSequence:
PlanePositionSequence, PlaneOrientationSequence, PixelMeasuresSequence and
PixelValueTransformationSequence. Legacy multi-frame objects (RT Dose) give one position plus
GridFrameOffsetVector along the normal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

from medimg.errors import DicomError
from medimg.io.dicom.geometry import orientation_vectors
from medimg.io.dicom.headers import Frame, number, numbers, thickness


def _item(groups: Dataset | None, sequence: str) -> Dataset | None:
    """The single item of a functional-group macro ``sequence`` in ``groups``, if present."""
    if groups is None or sequence not in groups:
        return None
    seq = groups[sequence].value
    return seq[0] if len(seq) else None


def _lookup(per_frame: Dataset | None, shared: Dataset | None, sequence: str) -> Dataset | None:
    """Per-frame macros override shared ones (a macro may live in either place)."""
    return _item(per_frame, sequence) or _item(shared, sequence)


def _enhanced_frame(ds: Dataset, path: Path, i: int, per_frame: Dataset | None,
                    shared: Dataset | None) -> Frame:  # fmt: skip
    orient = _lookup(per_frame, shared, "PlaneOrientationSequence")
    pos = _lookup(per_frame, shared, "PlanePositionSequence")
    meas = _lookup(per_frame, shared, "PixelMeasuresSequence")
    value = _lookup(per_frame, shared, "PixelValueTransformationSequence")
    return Frame(
        path=path,
        ds=ds,
        index=i,
        rows=int(ds.Rows),
        cols=int(ds.Columns),
        iop=numbers(orient, "ImageOrientationPatient"),
        ipp=numbers(pos, "ImagePositionPatient"),  # type: ignore[arg-type]
        pixel_spacing=numbers(meas, "PixelSpacing"),  # type: ignore[arg-type]
        slope=number(value, "RescaleSlope") or number(ds, "RescaleSlope") or 1.0,
        intercept=number(value, "RescaleIntercept", number(ds, "RescaleIntercept", 0.0)),  # type: ignore[arg-type]
        thickness=thickness(meas),
    )


def _legacy_frames(ds: Dataset, path: Path, n: int) -> list[Frame]:
    iop = numbers(ds, "ImageOrientationPatient")
    ipp = numbers(ds, "ImagePositionPatient")
    offsets = numbers(ds, "GridFrameOffsetVector")
    positions: list[tuple[float, ...] | None] = [None] * n
    if iop is not None and ipp is not None and offsets is not None and len(offsets) == n:
        normal = orientation_vectors(iop)[2]
        positions = [tuple(np.asarray(ipp) + o * normal) for o in offsets]
    scale = number(ds, "DoseGridScaling") if ds.get("Modality") == "RTDOSE" else None
    return [
        Frame(
            path=path,
            ds=ds,
            index=i,
            rows=int(ds.Rows),
            cols=int(ds.Columns),
            iop=iop,
            ipp=positions[i],  # type: ignore[arg-type]
            pixel_spacing=numbers(ds, "PixelSpacing"),  # type: ignore[arg-type]
            slope=scale or number(ds, "RescaleSlope") or 1.0,
            intercept=number(ds, "RescaleIntercept", 0.0),  # type: ignore[arg-type]
            thickness=thickness(ds),
        )
        for i in range(n)
    ]


def _check_frame_count(ds: Dataset, path: Path, n: int) -> None:
    """A NumberOfFrames the file cannot hold is refused before one record per frame is built.

    Every frame takes at least one byte of the file in any transfer syntax (a whole frame of
    pixels when uncompressed), so the file size bounds the count without reading pixel data.
    """
    bits = int(ds.get("BitsAllocated", 1) or 1) * int(ds.get("SamplesPerPixel", 1) or 1)
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    native = ts is None or not (UID(str(ts)).is_compressed or UID(str(ts)).is_deflated)
    frame_bytes = max(1, int(ds.Rows) * int(ds.Columns) * bits // 8) if native else 1
    size = path.stat().st_size
    if n < 1 or n * frame_bytes > size:
        raise DicomError(
            f"NumberOfFrames is {n} but the file ({size} bytes) cannot hold that many "
            f"{int(ds.Columns)}x{int(ds.Rows)} frames; the header is corrupt, export it again",
            path,
        )


def multiframe_frames(ds: Dataset, path: Path) -> list[Frame]:
    """One :class:`Frame` per frame of a multi-frame instance, in stored frame order."""
    n = int(number(ds, "NumberOfFrames") or 1)
    _check_frame_count(ds, path, n)
    if "PerFrameFunctionalGroupsSequence" not in ds:
        return _legacy_frames(ds, path, n)
    per_frame = ds.PerFrameFunctionalGroupsSequence
    if len(per_frame) != n:
        raise DicomError(
            f"NumberOfFrames is {n} but PerFrameFunctionalGroupsSequence has {len(per_frame)} "
            "items; the file is inconsistent, export it again",
            path,
        )
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    return [_enhanced_frame(ds, path, i, per_frame[i], shared) for i in range(n)]
