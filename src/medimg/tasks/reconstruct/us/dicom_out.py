"""A B-mode image as an Ultrasound Image Storage DICOM file (8-bit greyscale, calibrated).

medimg's series writer (:mod:`medimg.io.dicom.write`) stores non-CT/MR images as Secondary
Capture int16; scanners and PACS expect ultrasound as *US Image Storage*
(1.2.840.10008.5.1.4.1.1.6.1), 8-bit MONOCHROME2, its pixel size given by the *Sequence of
Ultrasound Regions* (``PhysicalDeltaX/Y`` in cm). This module writes that with pydicom (highdicom
has no ultrasound class). ``PixelSpacing`` is written as well, for readers that ignore the regions
(medimg reads either).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from medimg.errors import InputError
from medimg.io.dicom.geometry import ULTRASOUND_UNITS_CM
from medimg.io.dicom.write import MEDIMG_IMPLEMENTATION_NAME
from medimg.io.image import Image
from medimg.io.output import atomic_dir
from medimg.typing import PathType

__all__ = ["write_us_dicom", "write_us_grey_dicom"]


def _region(dx_mm: float, dz_mm: float, cols: int, rows: int) -> Dataset:
    r = Dataset()
    r.RegionSpatialFormat = 1  # 2D
    r.RegionDataType = 1  # tissue
    r.RegionFlags = 0
    r.RegionLocationMinX0, r.RegionLocationMinY0 = 0, 0
    r.RegionLocationMaxX1, r.RegionLocationMaxY1 = cols - 1, rows - 1
    r.PhysicalUnitsXDirection = r.PhysicalUnitsYDirection = ULTRASOUND_UNITS_CM
    r.PhysicalDeltaX, r.PhysicalDeltaY = dx_mm / 10.0, dz_mm / 10.0
    return r


def write_us_dicom(
    bmode_db: Image,
    folder: PathType,
    *,
    dynamic_range: float = 60.0,
    overwrite: bool = False,
    description: str = "medimg B-mode (delay-and-sum)",
) -> Path:
    """Write a B-mode ``(1, X lateral, Z depth)`` image in dB (0 = brightest, ``-dynamic_range``
    = black) to ``folder/bmode.dcm``; returns the file. The folder appears whole or not at all."""
    if bmode_db.num_channels != 1 or bmode_db.spatial_ndim != 2:
        raise InputError("an ultrasound DICOM holds one 2D B-mode image (1, X, Z)", folder)
    db = np.asarray(bmode_db.array[0], dtype=np.float64)
    if not np.all(np.isfinite(db)):
        raise InputError("the B-mode image holds NaN or Inf values", folder)
    grey = np.clip((db + dynamic_range) / dynamic_range, 0, 1) * 255
    dx_mm, dz_mm = (float(s) for s in bmode_db.spacing[:2])
    return write_us_grey_dicom(grey[None], (dx_mm, dz_mm), folder, overwrite=overwrite,
                               description=description)  # fmt: skip


def write_us_grey_dicom(
    frames: np.ndarray,
    spacing_mm: tuple[float, float],
    folder: PathType,
    *,
    overwrite: bool = False,
    description: str = "medimg B-mode",
    frame_time_ms: float | None = None,
) -> Path:
    """Write 8-bit grey frames ``(T, X lateral, Z depth)`` (values 0..255) to ``folder/bmode.dcm``:
    US Image Storage for one frame, US Multi-frame Image Storage for a cine. The folder appears
    whole or not at all."""
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim != 3 or frames.shape[0] < 1:
        raise InputError("ultrasound frames must be (T, X, Z)", folder)
    if not np.all(np.isfinite(frames)):
        raise InputError("the B-mode image holds NaN or Inf values", folder)
    grey = np.round(np.clip(frames, 0, 255)).astype(np.uint8)
    pixels = np.ascontiguousarray(np.transpose(grey, (0, 2, 1)))  # rows = depth, cols = lateral
    dx_mm, dz_mm = (float(s) for s in spacing_mm)
    n = pixels.shape[0]
    now = _dt.datetime.now()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = UltrasoundImageStorage if n == 1 else UltrasoundMultiFrameImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.ImageType = ["DERIVED", "PRIMARY", "", "0001"]  # value 4: tissue (B-mode) image
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.Modality = "US"
    ds.Manufacturer = "medimg"
    ds.SeriesDescription = description[:64]
    ds.PatientName, ds.PatientID = "ANONYMOUS^MEDIMG", "MEDIMG"
    for keyword in ("PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber",
                    "ReferringPhysicianName", "PatientOrientation"):  # fmt: skip
        setattr(ds, keyword, "")
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape[1:]
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00"
    if n > 1:
        ds.NumberOfFrames = n
        ds.FrameTime = f"{frame_time_ms or 33.3:.6g}"
        ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.SequenceOfUltrasoundRegions = Sequence([_region(dx_mm, dz_mm, ds.Columns, ds.Rows)])
    ds.PixelSpacing = [f"{dz_mm:.6g}", f"{dx_mm:.6g}"]  # row (depth), column (lateral) spacing
    ds.PixelData = pixels.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationVersionName = MEDIMG_IMPLEMENTATION_NAME
    with atomic_dir(folder, overwrite, mark=False) as tmp:
        ds.save_as(tmp / "bmode.dcm", enforce_file_format=True)
    return Path(folder) / "bmode.dcm"
