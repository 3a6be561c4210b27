"""Finding DICOM files and reading their headers (never their pixels) into :class:`Frame` records.

A :class:`Frame` is one 2D image plane: a single-frame file, or one frame of a multi-frame file.
Everything downstream (grouping into series, sorting, geometry checks, pixel loading) works on
frames, so single-frame series and enhanced multi-frame files share one code path.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, MediaStorageDirectoryStorage

from medimg.errors import DicomError, GeometryError, ImageReadError, InputError, MedimgError
from medimg.io.dicom.geometry import orientation_vectors, ultrasound_region_spacing
from medimg.io.inputs import check_regular_file

#: Elements larger than this (bytes) are not read with the header; their file offset is kept,
#: so pixel data can later be read straight into a numpy buffer.
DEFER_SIZE = 2048
#: Extensions that may hold DICOM without the 128-byte preamble (plus files with no extension).
DICOM_SUFFIXES = frozenset({"", ".dcm", ".dicom", ".ima"})
PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass(frozen=True)
class Frame:
    """One image plane and the header facts needed to place and rescale it.

    ``iop``/``ipp`` are LPS and ``None`` for images without patient-plane geometry (projection
    radiographs, secondary captures); ``pixel_spacing`` is DICOM's ``(dy, dx)`` (row, column).
    """

    path: Path
    ds: Dataset
    index: int | None  # frame number in a multi-frame file (0-based); None for single-frame
    rows: int
    cols: int
    iop: tuple[float, ...] | None
    ipp: tuple[float, float, float] | None
    pixel_spacing: tuple[float, float] | None
    slope: float = 1.0
    intercept: float = 0.0
    thickness: float | None = None


def _inside_pydicom(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while pydicom code was running (a value it could not convert)."""
    tb = exc.__traceback__
    while tb is not None:
        if "pydicom" in Path(tb.tb_frame.f_code.co_filename).parts:
            return True
        tb = tb.tb_next
    return False


@contextmanager
def header_values(source: Path) -> Iterator[None]:
    """pydicom converts a header value when it is first used, long after the file was read: a
    value it cannot convert (an unknown VR, undecodable text) is the file's fault, reported in
    one line naming ``source``. Errors raised outside pydicom pass through unchanged."""
    try:
        yield
    except MedimgError:
        raise
    except Exception as exc:
        if not _inside_pydicom(exc):
            raise
        msg = " ".join(str(exc).split())[:200]
        raise DicomError(
            f"unreadable DICOM attribute ({type(exc).__name__}: {msg}); the header is corrupt "
            "or not DICOM-conformant, export it again",
            source,
        ) from None


def numbers(ds: Dataset | None, keyword: str) -> tuple[float, ...] | None:
    """Finite numbers of a DS/IS element of ``ds``; None if absent, empty or not numbers.

    Elements pydicom has not converted yet are read from their raw text: pydicom's validated
    DS conversion is otherwise the largest part of the header pass on long series.
    """
    if ds is None:
        return None
    elem = ds.get_item(tag_for_keyword(keyword), keep_deferred=True)
    if elem is None:
        return None
    value = elem.value
    if isinstance(elem, RawDataElement) and isinstance(value, bytes):
        value = value.decode("latin-1").strip(" \x00").split("\\")
    elif isinstance(value, str) or not hasattr(value, "__iter__"):
        value = [value]
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if out and all(math.isfinite(v) for v in out) else None


def number(ds: Dataset | None, keyword: str, default: float | None = None) -> float | None:
    """The first value of :func:`numbers`, or ``default``."""
    values = numbers(ds, keyword)
    return values[0] if values else default


def thickness(ds: Dataset | None) -> float | None:
    """Slab thickness of one slice: SliceThickness, else SpacingBetweenSlices (positive)."""
    for keyword in ("SliceThickness", "SpacingBetweenSlices"):
        value = number(ds, keyword)
        if value is not None and value > 0:
            return value
    return None


def _sop_class(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(ds.get("SOPClassUID") or (meta or {}).get("MediaStorageSOPClassUID") or "")


def _cut_short(ds: Dataset, path: Path) -> str | None:
    """What was cut if the last element read is shorter than its declared length, else None."""
    if not len(ds):
        return "the file holds no DICOM elements"
    last = ds.get_item(next(reversed(ds.keys())), keep_deferred=True)  # in file order
    if not isinstance(last, RawDataElement) or last.length == 0xFFFFFFFF:
        return None
    if last.value is None and is_deflated(ds):
        return None  # value_tell is an offset into the inflated stream
    if last.value is None:  # deferred: its value must fit in the file
        have = max(0, path.stat().st_size - last.value_tell)
    else:
        have = len(last.value)
    if have >= last.length:
        return None
    name = keyword_for_tag(last.tag) or str(last.tag)
    return f"the file ends inside {name} ({have} of {last.length} bytes)"


def is_deflated(ds: Dataset) -> bool:
    """Whether the dataset was stored deflated (read whole: no file offsets apply)."""
    ts = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    return ts is not None and UID(str(ts)).is_deflated


def _check_complete(ds: Dataset, path: Path, *, pixels: bool) -> Dataset:
    """pydicom stops quietly at a premature end of file: catch files cut short."""
    problem = _cut_short(ds, path)  # first: reading values converts the raw elements
    sop = _sop_class(ds)
    if sop == MediaStorageDirectoryStorage:
        return ds  # a DICOMDIR: complete without SOPClassUID/Modality
    expects_pixels = "Rows" in ds or "Image Storage" in UID(sop).name
    if problem is None and "SOPClassUID" not in ds:
        if not is_image(ds):  # a bare dataset, not an image: skipped in folders, refused alone
            return ds
        if not any(t in ds for t in PIXEL_TAGS):
            problem = "its header lacks SOPClassUID and the pixel data"
        # an image lacking only SOPClassUID (non-conformant exports) is read as one
    if problem is None and expects_pixels:
        if not is_image(ds) or (pixels and not any(t in ds for t in PIXEL_TAGS)):
            problem = "its header ends before the pixel data"
    if problem:
        raise DicomError(f"truncated or corrupt DICOM file: {problem}; copy or export it again",
                         path)  # fmt: skip
    return ds


def read_header(path: Path, *, pixels: bool) -> Dataset | None:
    """The header of ``path``, or ``None`` when it is not a DICOM file.

    ``pixels=True`` parses the whole file but defers large values (pixel data) so their offsets
    are known; ``pixels=False`` stops before the pixel data (for listing series). Files with the
    DICOM preamble that fail to parse or end early raise :class:`DicomError`.
    """
    opts = {"defer_size": DEFER_SIZE} if pixels else {"stop_before_pixels": True}
    try:
        ds = pydicom.dcmread(path, **opts)
        if pixels and is_deflated(ds):  # offsets are into the inflated stream, not the file:
            ds = pydicom.dcmread(path)  # nothing can be read later at a file offset
        return _check_complete(ds, path, pixels=pixels)
    except InvalidDicomError:
        pass  # no preamble: maybe a bare dataset (old exports), checked below
    except DicomError:
        raise
    except (PermissionError, IsADirectoryError) as exc:  # not damage: say what it is
        raise ImageReadError(f"cannot be read ({exc.strerror}); check its permissions",
                             path) from None  # fmt: skip
    except Exception as exc:  # pydicom raises many kinds for damaged files
        raise DicomError(
            f"truncated or corrupt DICOM file ({type(exc).__name__}: {exc}); "
            "copy or export it again",
            path,
        ) from None
    if path.suffix.lower() not in DICOM_SUFFIXES:
        return None
    try:  # a dataset without the preamble must still look like a DICOM instance
        ds = pydicom.dcmread(path, force=True, **opts)
    except Exception:
        return None
    return ds if "SOPClassUID" in ds and ("Modality" in ds or "Rows" in ds) else None


def find_files(folder: Path) -> Iterator[Path]:
    """All files under ``folder`` that are not folders, recursively, in a deterministic (sorted)
    order (hidden names skipped); special files are yielded too, for :func:`scan` to count."""
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            if not name.startswith("."):
                yield Path(root) / name


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:  # a dangling link, no permission
        return False


def is_image(ds: Dataset) -> bool:
    """Whether an instance holds pixels (Rows/Columns are type 1 in every image module)."""
    return "Rows" in ds and "Columns" in ds


def kind(ds: Dataset) -> str:
    """Human-readable kind of an instance, e.g. ``'RT Structure Set Storage (RTSTRUCT)'``."""
    sop = _sop_class(ds)
    name = UID(sop).name if sop else "object of unknown SOP class"
    return (
        f"{name} ({ds.get('Modality', 'DICOMDIR' if sop == MediaStorageDirectoryStorage else '?')})"
    )


def frames_of(ds: Dataset, path: Path) -> list[Frame]:
    """The frames of one image instance; a one-line error if its attributes do not parse."""
    try:
        return _frames_of(ds, path)
    except MedimgError:
        raise
    except Exception as exc:  # malformed values surface on access, deep inside pydicom
        raise DicomError(
            f"unreadable image attributes ({type(exc).__name__}: {exc}); the header is corrupt "
            "or not DICOM-conformant, export it again",
            path,
        ) from None


def pixel_spacing(ds: Any) -> list[float] | None:
    """``PixelSpacing``, else ``ImagerPixelSpacing``; ``None`` (unknown, as when absent) for a
    projection image without a patient position whose spacing reads 0 \\ 0: some CR/DX
    writers store zeros for "not calibrated". A cross-sectional slice with zero spacing is still
    refused by :func:`check_frame`, since no grid can come from it."""
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        value = numbers(ds, key)
        if not value:
            continue
        if "ImagePositionPatient" not in ds and all(v == 0 for v in value):
            continue
        return value
    return ultrasound_region_spacing(ds)


def check_frame(frame: Frame) -> Frame:
    """Refuse, naming the file, a frame whose size or plane geometry no grid can come from."""
    where = "" if frame.index is None else f"frame {frame.index + 1}: "
    if frame.rows < 1 or frame.cols < 1:
        raise DicomError(f"{where}Rows x Columns is {frame.rows}x{frame.cols}; the header is "
                         "corrupt, export the file again", frame.path)  # fmt: skip
    problem = None
    if frame.iop is not None:
        try:
            orientation_vectors(frame.iop)
        except InputError as e:
            problem = str(e)
    if frame.ipp is not None and len(frame.ipp) != 3:
        problem = f"ImagePositionPatient must be 3 numbers, got {list(frame.ipp)}"
    ps = frame.pixel_spacing
    if ps is not None and (len(ps) != 2 or min(ps) <= 0):
        problem = f"PixelSpacing must be 2 positive numbers, got {list(ps)}"
    if problem:
        raise GeometryError(f"{where}{problem}, so no image grid can be built; fix or "
                            "re-export the file", frame.path)  # fmt: skip
    return frame


#: Header values the series listing and the reader's metadata use after the header pass.
_USED_LATER = (
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "SeriesDescription",
    "Modality",
    "PatientID",
    "FrameOfReferenceUID",
    "SeriesNumber",
    "PhotometricInterpretation",
)
#: Allowed values of the pixel-description attributes that decoding relies on.
_PIXEL_FORMAT = {
    "Rows": range(1, 1 << 16),
    "Columns": range(1, 1 << 16),
    "SamplesPerPixel": (1, 3, 4),
    "BitsAllocated": (1, 8, 16, 32, 64),
    "PixelRepresentation": (0, 1),
}


def _check_pixel_format(ds: Dataset, path: Path) -> None:
    """Single, plausible values for the attributes that size and decode the pixels, so that
    nothing later trips over a list, a string or an impossible bit depth."""
    for keyword, allowed in _PIXEL_FORMAT.items():
        value = ds.get(keyword)
        if value is None and keyword not in ("Rows", "Columns"):
            continue
        if not isinstance(value, int) or value not in allowed:
            raise DicomError(
                f"{keyword} is {str(value)[:40]!r}, not a valid value; the header is corrupt or "
                "not DICOM-conformant, export the file again",
                path,
            )
    stored = ds.get("BitsStored")
    if stored is not None and (not isinstance(stored, int) or
                               not 1 <= stored <= int(ds.get("BitsAllocated", 16))):  # fmt: skip
        raise DicomError(
            f"BitsStored is {str(stored)[:40]!r}, more than BitsAllocated or not a number; the "
            "header is corrupt, export the file again",
            path,
        )


def _frames_of(ds: Dataset, path: Path) -> list[Frame]:
    """The frames of one image instance (single-frame, enhanced or legacy multi-frame)."""
    from medimg.io.dicom.multiframe import multiframe_frames

    for keyword in _USED_LATER:  # converted now, so a bad value is blamed on this file
        ds.get(keyword)
    _check_pixel_format(ds, path)
    rows, cols = int(ds.Rows), int(ds.Columns)
    if (number(ds, "NumberOfFrames") or 1) > 1 or "PerFrameFunctionalGroupsSequence" in ds:
        return [check_frame(f) for f in multiframe_frames(ds, path)]
    return [
        check_frame(
            Frame(
                path=path,
                ds=ds,
                index=None,
                rows=rows,
                cols=cols,
                iop=numbers(ds, "ImageOrientationPatient"),
                ipp=numbers(ds, "ImagePositionPatient"),  # type: ignore[arg-type]
                pixel_spacing=pixel_spacing(ds),  # type: ignore[arg-type]
                slope=number(ds, "RescaleSlope") or 1.0,
                intercept=number(ds, "RescaleIntercept", 0.0),  # type: ignore[arg-type]
                thickness=thickness(ds),
            )
        )
    ]


def scan(path: Path, *, pixels: bool, unreadable: list[str] | None = None) -> list[Frame]:
    """Frames of every image instance at ``path`` (a file, or a folder searched recursively).

    Non-DICOM files and DICOM objects without pixels (DICOMDIR, SR, RTSTRUCT...) in a folder are
    skipped; a single file that is either raises a one-line error saying which. A damaged file
    in a folder raises too, unless ``unreadable`` is a list: then its one-line message is
    appended there and the scan goes on (for listing what else the folder holds).
    """
    if not path.exists():
        raise ImageReadError("no such file or folder", path)
    if not path.is_dir():
        return _scan_file(check_regular_file(path), pixels=pixels)
    frames: list[Frame] = []
    skipped: list[str] = []
    for f in find_files(path):
        if not _is_regular(f):  # a FIFO or device would block the read: never opened
            if unreadable is not None:
                unreadable.append(f"{f}: not a regular file (FIFO, socket, device or dangling "
                                  "link), skipped")  # fmt: skip
            continue
        try:
            with header_values(f):
                ds = read_header(f, pixels=pixels)
                if ds is None:
                    continue
                if is_image(ds):
                    frames.extend(frames_of(ds, f))
                else:
                    skipped.append(kind(ds))
        except MedimgError as exc:
            if unreadable is None:
                raise
            unreadable.append(str(exc))
    if not frames:
        found = f"; found only {', '.join(sorted(set(skipped)))}" if skipped else ""
        if unreadable:  # say why, not only that nothing was found
            found += f"; {len(unreadable)} file(s) unreadable, e.g. {unreadable[0]}"
        raise DicomError(f"no DICOM images in this folder{found}; point to an image series", path)
    return frames


def _scan_file(path: Path, *, pixels: bool) -> list[Frame]:
    with header_values(path):
        return _scan_one(path, pixels=pixels)


def _scan_one(path: Path, *, pixels: bool) -> list[Frame]:
    ds = read_header(path, pixels=pixels)
    if ds is None:
        suffix = path.suffix.lower()
        if suffix not in DICOM_SUFFIXES:
            raise ImageReadError(
                f"unknown extension '{suffix}' and no DICOM header: read_dicom reads DICOM files "
                "(.dcm, .ima, or with the DICM preamble) and folders; use medimg.io.load for "
                "NIfTI/NRRD/MHA",
                path,
            )
        raise DicomError(
            "not a DICOM file (no 'DICM' preamble and no readable DICOM header); "
            "check that it was exported as DICOM",
            path,
        )
    if not is_image(ds):
        raise DicomError(
            f"is a DICOM {kind(ds)} without pixel data, so it holds no image; "
            "read the image series it refers to instead",
            path,
        )
    return frames_of(ds, path)
