"""Write an Image as a DICOM series: one single-frame file per slice, explicit VR little endian.

SOP class by modality: CT Image Storage for ``CT``, MR Image Storage for ``MR``, and Secondary
Capture Image Storage for anything else (the one generic class that every archive and viewer
accepts for an arbitrary modality code; the image plane attributes are written as well, and
GDCM/ITK, pydicom-based readers and our own reader use them).

Pixel values are stored as int16 with ``RescaleSlope``/``RescaleIntercept`` (see
:func:`rescale_to_int16`): whole-number data whose range spans at most 65536 values (CT in HU,
labels) is stored exactly with slope 1; anything else is mapped linearly onto the int16 range,
so each decoded value is within ``slope / 2`` of the original.

Left-handed grids (``det(affine) < 0``, e.g. LAS): DICOM keeps each slice's position, not the
order of our k axis, and readers sort slices along the normal ``row x col``. Such a series reads
back with the k axis reversed (and the affine adjusted to match), i.e. the same voxels at the
same world positions; compare with :meth:`Image.canonical`.

Derived series (a denoised CT, a reconstructed MR of a scanned patient): pass the source series
as ``source`` and the files join its study as a new series (new SeriesInstanceUID, a
SeriesNumber other than the source's) with the Patient and Study attributes copied intact
(:data:`COPIED_FROM_SOURCE`), so an archive files them with the original study instead of
splitting or rejecting them. Without a source, a new study of an anonymous patient is written.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pydicom.valuerep import DSfloat, format_number_as_ds

from medimg.errors import InputError
from medimg.io.api import check_modality
from medimg.io.dicom.geometry import plane_geometry
from medimg.io.image import Image
from medimg.io.output import atomic_dir, check_output
from medimg.typing import PathType

__all__ = [
    "COPIED_FROM_SOURCE",
    "DERIVED_SERIES_OFFSET",
    "MEDIMG_IMPLEMENTATION_NAME",
    "SOP_CLASSES",
    "rescale_to_int16",
    "write_dicom_series",
]

#: Storage class per modality; anything else is written as Secondary Capture.
SOP_CLASSES = {"CT": CTImageStorage, "MR": MRImageStorage}
#: File-meta ImplementationVersionName of every file we write; ``overwrite=True`` removes only
#: files carrying it, so a user's own files are never deleted.
MEDIMG_IMPLEMENTATION_NAME = "MEDIMG"
_I16 = (-32768, 32767)
#: Patient and General Study attributes a derived series takes from its source, as they are.
COPIED_FROM_SOURCE = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "PatientAge", "PatientSize", "PatientWeight", "StudyInstanceUID", "StudyDate", "StudyTime",
    "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription",
)  # fmt: skip
#: Default SeriesNumber of a derived series: the source's plus this (never the source's own).
DERIVED_SERIES_OFFSET = 2000


def _ds(value: float) -> DSfloat:
    return DSfloat(format_number_as_ds(float(value)), auto_format=False)


def rescale_to_int16(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Stored int16 values plus ``(slope, intercept)`` such that ``value ~ slope * stored + intercept``.

    Whole-number data spanning at most 65536 values is exact (slope 1; intercept 0 when it fits
    int16 as is, else offset). Otherwise slope ``= range / 65534``: each decoded value is within
    ``slope / 2`` of the original (the slope and intercept are first rounded to the 16 characters
    a DICOM decimal string holds, and the quantisation uses the rounded values).
    """
    v = np.asarray(values, dtype=np.float64)
    lo, hi = float(v.min()), float(v.max())
    # (beyond 2**31 a 16-character decimal intercept may no longer be exact)
    if np.array_equal(v, np.round(v)) and hi - lo <= 65535 and max(-lo, hi) < 2**31:
        slope = 1.0
        intercept = 0.0 if (lo >= _I16[0] and hi <= _I16[1]) else lo - _I16[0]
    else:
        slope = (hi - lo) / 65534 if hi > lo else 1.0
        intercept = lo - _I16[0] * slope
    slope, intercept = float(_ds(slope)), float(_ds(intercept))
    stored = np.clip(np.round((v - intercept) / slope), *_I16).astype(np.int16)
    return stored, slope, intercept


def _is_ours(path: Path) -> bool:
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
    except Exception:  # not DICOM, unreadable: certainly not a file we may delete
        return False
    return str(meta.get("ImplementationVersionName", "")).startswith(MEDIMG_IMPLEMENTATION_NAME)


def _prepare_folder(folder: Path, overwrite: bool) -> None:
    """Check the target folder: new, empty, or (with ``overwrite``) an earlier medimg series."""
    if folder.exists() and not folder.is_dir():
        raise InputError("is a file; write_dicom_series needs a folder path", folder)
    check_output(folder, overwrite)  # refuses a non-empty folder unless overwrite
    if not folder.is_dir():
        return
    foreign = [e for e in sorted(folder.iterdir()) if not (e.is_file() and _is_ours(e))]
    if foreign:
        raise InputError(
            f"folder holds {len(foreign)} file(s) medimg did not write (e.g. {foreign[0].name}); "
            "overwrite only replaces an earlier medimg series, choose an empty or new folder",
            folder,
        )


def _base_dataset(image: Image, modality: str, sop_class: str, **ids: object) -> Dataset:
    now = _dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8 patient names
    ds.SOPClassUID = sop_class
    ds.ImageType = ["DERIVED", "SECONDARY"] + (["AXIAL"] if modality == "CT" else [])
    ds.SeriesDate = ds.ContentDate = date
    ds.SeriesTime = ds.ContentTime = time
    study: Dataset = ids["study"]  # type: ignore[assignment]
    for keyword in COPIED_FROM_SOURCE:
        if keyword in study:
            setattr(ds, keyword, study[keyword].value)
    ds.Modality = modality
    ds.Manufacturer = "medimg"
    ds.SeriesDescription = str(ids["series_description"])
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                    "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName"):  # fmt: skip
        if keyword not in ds:  # type 2: present, empty when unknown
            setattr(ds, keyword, "")
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = int(ids["series_number"])  # type: ignore[call-overload]
    ds.FrameOfReferenceUID = str(ids["frame_of_reference_uid"])
    ds.PositionReferenceIndicator = ""
    if modality == "CT":
        ds.KVP = ""
        ds.AcquisitionNumber = ""
    elif modality == "MR":  # type 1/2 attributes of the MR Image module, for a derived image
        ds.ScanningSequence = "RM"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = ""
        ds.RepetitionTime = ""
        ds.EchoTime = ""
        ds.EchoTrainLength = ""
    else:  # Secondary Capture: equipment module, and patient orientation (type 2C there)
        ds.ConversionType = "WSD"
        ds.PatientOrientation = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = image.spatial_shape[1], image.spatial_shape[0]
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    return ds


def _read_source(source: PathType | Dataset) -> Dataset:
    """The header of one file of the source series (a file, a series folder, or a dataset)."""
    if isinstance(source, Dataset):
        return source
    path = Path(source)
    if not path.exists():
        raise InputError("source series not found; pass its folder or one of its files", path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError):
            continue  # a README or thumbnail next to the series
        if "StudyInstanceUID" in ds:
            return ds
    raise InputError("no DICOM file with a StudyInstanceUID in the source series", path)


def _implicit_source(image: Image, study_uid: str | None) -> Path | None:
    """The series ``image`` was read from, when the caller joins that very study."""
    where = image.meta.get("source")
    if study_uid and study_uid == image.meta.get("study_uid") and where and Path(where).exists():
        return Path(where)
    return None


def _study(
    src: Dataset | None, study_uid: str | None, patient_name: str | None, patient_id: str | None
) -> Dataset:
    """Patient and study attributes: the source's; or a new anonymous study; or, joining a study
    whose source is unknown, empty (type 2) rather than invented."""
    study = Dataset()
    if src is not None:
        for keyword in COPIED_FROM_SOURCE:
            if keyword in src:  # a name as text: we write UTF-8, the source may use another set
                elem = src[keyword]
                setattr(study, keyword, str(elem.value) if elem.VR == "PN" else elem.value)
    elif study_uid is None:
        now = _dt.datetime.now()
        study.StudyDate, study.StudyTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
        study.PatientName, study.PatientID = "ANONYMOUS^MEDIMG", "MEDIMG"
    overrides = {"StudyInstanceUID": study_uid, "PatientName": patient_name,
                 "PatientID": patient_id}  # fmt: skip
    for keyword, value in overrides.items():
        if value is not None:
            setattr(study, keyword, str(value))
    if not study.get("StudyInstanceUID"):
        study.StudyInstanceUID = generate_uid()
    return study


def write_dicom_series(
    image: Image,
    folder: PathType,
    *,
    overwrite: bool = False,
    modality: str | None = None,
    series_description: str | None = None,
    source: PathType | Dataset | None = None,
    patient_name: str | None = None,
    patient_id: str | None = None,
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_number: int | None = None,
) -> list[Path]:
    """Write a one-channel 2D or 3D image as a DICOM series, one file per slice.

    Parameters
    ----------
    image
        ``(1, X, Y[, Z])``; X runs along DICOM columns, Y along rows, Z over the files. A 2D
        image gives one file.
    folder
        Created if missing. An existing non-empty folder is refused unless ``overwrite``; even
        then it may only hold files medimg wrote (an earlier series), which are replaced.
        Anything else there raises, and nothing is deleted.
    modality
        Overrides ``image.modality``; picks the SOP class (:data:`SOP_CLASSES`, else Secondary
        Capture). A DICOM code string: up to 16 of A-Z, 0-9, space, underscore.
    series_description
        Written as given (64 characters at most); default ``image.meta["description"]`` (which
        model made the image, :mod:`medimg.engine.provenance`), else ``medimg``.
    source
        The series this image derives from (its folder, one of its files, or a pydicom
        dataset): Patient and Study attributes (:data:`COPIED_FROM_SOURCE`) and the frame of
        reference are copied from it, and the series number defaults to the source's plus
        :data:`DERIVED_SERIES_OFFSET`. When omitted but ``study_uid`` equals
        ``image.meta["study_uid"]`` (the image was read from that study), ``image.meta["source"]``
        is used if it still exists.
    patient_name, patient_id, study_uid, frame_of_reference_uid
        Override the source's. Without a source and ``study_uid``, a new study of patient
        ``ANONYMOUS^MEDIMG`` (ID ``MEDIMG``) dated today; joining ``study_uid`` without a
        source, unknown patient and study attributes are left empty rather than invented.
    series_number
        Default: the source's plus :data:`DERIVED_SERIES_OFFSET`, or 1 without a source.

    Returns
    -------
    list of Path
        The files in slice (k) order, named ``slice_0001.dcm`` ... .

    Raises
    ------
    InputError
        Several channels, complex or NaN/Inf data, a sheared grid, a modality that is not a
        DICOM code string, or a folder holding foreign files.
    OutputExistsError
        The folder exists, is not empty, and ``overwrite`` is false.
    """
    folder = Path(folder)
    if series_description is None:
        series_description = str(image.meta.get("description") or "medimg")[:64]
    if image.num_channels != 1:
        raise InputError(
            f"DICOM series hold one channel, the image has {image.num_channels}; "
            "write each channel separately (image.with_array(image.array[c:c + 1]))",
            folder,
        )
    if np.iscomplexobj(image.array):
        raise InputError("complex data cannot be written to DICOM; write abs() instead", folder)
    image.check_finite(str(folder))
    mod = check_modality(modality or image.modality)  # goes into every file's header as is
    n = image.spatial_shape[2] if image.spatial_ndim == 3 else 1
    try:
        geom = plane_geometry(image.affine, n)
    except InputError as e:
        raise InputError(str(e), folder) from e
    if source is None:
        source = _implicit_source(image, study_uid)
    src = _read_source(source) if source is not None else None
    _prepare_folder(folder, overwrite)
    if series_number is None:
        src_number = str(src.get("SeriesNumber", "") or "") if src is not None else ""
        series_number = int(src_number) + DERIVED_SERIES_OFFSET if src_number.isdigit() else 1
    if frame_of_reference_uid is None and src is not None:
        frame_of_reference_uid = str(src.get("FrameOfReferenceUID", "")) or None

    vol = image.array[0] if image.spatial_ndim == 3 else image.array[0][..., None]
    stored, slope, intercept = rescale_to_int16(vol)
    ds = _base_dataset(
        image, mod, SOP_CLASSES.get(mod, SecondaryCaptureImageStorage),
        series_description=series_description,
        study=_study(src, study_uid, patient_name, patient_id), series_number=series_number,
        frame_of_reference_uid=frame_of_reference_uid or generate_uid(),
    )  # fmt: skip
    ds.ImageOrientationPatient = [_ds(v) for v in geom["iop"]]  # type: ignore[union-attr]
    ds.PixelSpacing = [_ds(v) for v in geom["pixel_spacing"]]  # type: ignore[union-attr]
    ds.SliceThickness = _ds(geom["slice_spacing"])  # type: ignore[arg-type]
    if n > 1:
        ds.SpacingBetweenSlices = _ds(geom["slice_spacing"])  # type: ignore[arg-type]
    ds.RescaleIntercept, ds.RescaleSlope = _ds(intercept), _ds(slope)
    ds.RescaleType = "HU" if mod == "CT" else "US"  # US: unspecified
    lo, hi = float(vol.min()), float(vol.max())
    ds.WindowCenter, ds.WindowWidth = _ds((lo + hi) / 2), _ds(max(hi - lo, 1.0))
    normal = np.cross(*np.reshape(geom["iop"], (2, 3)))  # type: ignore[call-overload]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationVersionName = MEDIMG_IMPLEMENTATION_NAME

    width = max(4, len(str(n)))
    names = [f"slice_{k + 1:0{width}d}.dcm" for k in range(n)]
    # The whole series is written into a private folder and swapped in whole: an interrupt
    # leaves the old series or the complete new one, never a mix.
    with atomic_dir(folder, overwrite, mark=False, owned=True) as tmpdir:
        for k, name in enumerate(names):
            pos = geom["positions"][k]  # type: ignore[index]
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [_ds(v) for v in pos]
            ds.SliceLocation = _ds(float(np.dot(pos, normal)))
            # ours (X, Y) = (column, row); DICOM pixel data is row-major (rows, columns)
            ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).astype("<i2").tobytes()
            ds.save_as(tmpdir / name, enforce_file_format=True)
    return [folder / name for name in names]
