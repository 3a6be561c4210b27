"""Tiny DICOM fixtures for the reader's tests: single-frame CT/MR slices with chosen geometry.

Everything is written with pydicom under fixed seeds and deterministic UIDs. Volumes are given in
our layout ``(X, Y, Z)`` = (column, row, slice); slice ``k`` is stored as ``volume[:, :, k].T``
(DICOM rows x columns). Geometry is given either as a RAS+ affine (converted here to LPS plane
attributes) or as explicit LPS ``iop`` / ``positions`` for broken layouts (gaps, tilt).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    BasicTextSRStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    RTStructureSetStorage,
    generate_uid,
)

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_SOP = {"CT": CTImageStorage, "MR": MRImageStorage}


def uid(name: str) -> str:
    """A valid, deterministic UID derived from ``name``."""
    return generate_uid(entropy_srcs=[name])


def _base(sop_class: str, modality: str, series: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Case", "P001", "", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("study"), uid(series)
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240102", "101010", "1", ""
    ds.ReferringPhysicianName, ds.Manufacturer = "", "medimg-tests"
    ds.SeriesNumber = 1
    return ds


def make_slice(
    pixels: np.ndarray,
    *,
    ipp: Sequence[float] = (0.0, 0.0, 0.0),
    iop: Sequence[float] = AXIAL,
    pixel_spacing: Sequence[float] = (1.0, 1.0),
    modality: str = "CT",
    slope: float = 1.0,
    intercept: float = 0.0,
    series: str = "series-a",
    instance: int = 1,
    description: str = "test series",
    thickness: float | None = 1.0,
) -> Dataset:
    """One single-frame CT/MR slice; ``pixels`` is (rows, columns), int16/uint16 or float32.

    ``pixel_spacing`` is DICOM's ``[row spacing, column spacing]``. float32 pixels go into
    FloatPixelData (no rescale).
    """
    ds = _base(_SOP[modality], modality, series)
    ds.SOPInstanceUID = uid(f"{series}/{instance}/{list(ipp)}")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesDescription, ds.InstanceNumber = description, instance
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = uid("frame"), ""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.AcquisitionNumber, ds.ContentDate, ds.ContentTime = 1, "20240102", "101010"
    ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in iop]
    ds.PixelSpacing = [f"{v:.6f}" for v in pixel_spacing]
    if thickness is not None:
        ds.SliceThickness = f"{thickness:.6f}"
    if modality == "CT":
        ds.KVP = "120"
    else:
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "NONE", ""
        ds.MRAcquisitionType, ds.EchoTime, ds.RepetitionTime = "2D", "10", "500"
    if pixels.dtype == np.float32:
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.BitsAllocated = 1, "MONOCHROME2", 32
        ds.FloatPixelData = np.ascontiguousarray(pixels, "<f4").tobytes()
        return ds
    ds.set_pixel_data(np.ascontiguousarray(pixels), "MONOCHROME2", pixels.dtype.itemsize * 8)
    ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
    if modality == "CT":
        ds.RescaleType = "HU"
    return ds


def grid_from_affine(affine_ras: np.ndarray, n_slices: int) -> dict:
    """LPS plane attributes (iop, [dy, dx] spacing, IPPs) of a RAS+ affine's slices."""
    lps = LPS_TO_RAS @ np.asarray(affine_ras, dtype=np.float64)
    dx, dy = np.linalg.norm(lps[:3, :2], axis=0)
    iop = [*(lps[:3, 0] / dx), *(lps[:3, 1] / dy)]
    positions = lps[:3, 3] + np.arange(n_slices)[:, None] * lps[:3, 2]
    return {"iop": iop, "pixel_spacing": (dy, dx), "positions": positions}


def write_series(
    folder: Path,
    volume: np.ndarray,
    *,
    affine: np.ndarray | None = None,
    positions: Sequence[Sequence[float]] | None = None,
    iop: Sequence[float] = AXIAL,
    pixel_spacing: Sequence[float] = (1.0, 1.0),
    seed: int = 0,
    slopes: Sequence[float] | None = None,
    intercepts: Sequence[float] | None = None,
    syntax: str | None = None,
    **kwargs,
) -> list[Path]:
    """Write ``volume`` (X, Y, Z) as single-frame slices, in position order of ``Z``.

    File names and InstanceNumbers are shuffled (seeded) so that neither matches the position
    order: the reader must sort along the slice normal. Returns the paths in ``Z`` order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    n = volume.shape[2]
    if affine is not None:
        geo = grid_from_affine(affine, n)
        iop, pixel_spacing, positions = geo["iop"], geo["pixel_spacing"], geo["positions"]
    if positions is None:
        normal = np.cross(np.asarray(iop[:3]), np.asarray(iop[3:]))
        positions = [normal * k for k in range(n)]
    rng = np.random.default_rng(seed)
    names, instances = rng.permutation(n), rng.permutation(n) + 1
    paths = []
    for k in range(n):
        ds = make_slice(
            volume[:, :, k].T,
            ipp=positions[k],
            iop=iop,
            pixel_spacing=pixel_spacing,
            instance=int(instances[k]),
            slope=1.0 if slopes is None else slopes[k],
            intercept=0.0 if intercepts is None else intercepts[k],
            **kwargs,
        )
        if syntax is not None:
            ds.compress(syntax)
        path = folder / f"IM{names[k]:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def random_volume(shape: tuple[int, int, int] = (7, 9, 5), seed: int = 0) -> np.ndarray:
    """int16 stored values spanning negative and positive numbers."""
    return np.random.default_rng(seed).integers(-1000, 3000, size=shape).astype(np.int16)


def write_no_pixels(path: Path, kind: str = "SR") -> Path:
    """A DICOM object without pixel data: a Basic Text SR or an RT Structure Set."""
    sop, modality = {"SR": (BasicTextSRStorage, "SR"), "RTSTRUCT": (RTStructureSetStorage,
                                                                     "RTSTRUCT")}[kind]  # fmt: skip
    ds = _base(sop, modality, f"{kind}-series")
    ds.SOPInstanceUID = uid(f"{kind}-instance")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


def truncate(path: Path, keep: int) -> Path:
    """Cut ``path`` to its first ``keep`` bytes (negative: drop that many from the end)."""
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    return path
