"""DICOM Segmentation (SEG) out, and back in, with highdicom.

A label map on the grid of a DICOM series becomes one SEG instance referencing that series:
one segment per nonzero label value, its ``SegmentNumber`` equal to the label value (kidney 3 in
the NIfTI is segment 3 in the SEG). ``BINARY`` (the type every SEG reader understands) needs
segment numbers 1..n, so absent values below the largest one get an empty segment (a model's
label table stays whole); above :data:`MAX_KEPT_LABEL` the values are renumbered 1..n instead.
``LABELMAP`` (the 2024 Label Map Segmentation class) keeps the values as they are. Each
segment's ``TrackingID`` records its label value (``"medimg label 4"``), which
:func:`read_dicom_seg` uses to give back the original values. Each segment is coded with the
SNOMED CT category and type of its name and a recommended display colour
(:mod:`medimg.io.dicom.codes`; unknown names: SCT 85756007 "Tissue"); the segment label
carries the name. The SEG is a new series (new UID, a SeriesNumber other than the source's)
with ContentCreatorName and the type-2 attributes of its modules present (empty if unknown).
Only frames that hold a segment are stored (highdicom's
``omit_empty_frames``; each frame keeps its plane position), so three small spheres in a
300-slice series cost a few dozen frames, not 900; reading back gives the slab from the first to
the last stored slice, at the right world positions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from medimg.errors import DicomError, ImageReadError, InputError
from medimg.io.dicom.codes import structure_code
from medimg.io.dicom.geometry import orientation_vectors, ras_affine
from medimg.io.image import LPS_TO_RAS, Image
from medimg.io.output import atomic_path, check_outputs
from medimg.typing import PathType

__all__ = [
    "GRID_TOLERANCE_MM",
    "MAX_KEPT_LABEL",
    "SEG_SERIES_OFFSET",
    "read_dicom_seg",
    "sort_by_normal",
    "write_dicom_seg",
]

#: Largest distance (mm) between corresponding voxel centres of labels and source grid.
GRID_TOLERANCE_MM = 1e-3
#: Largest label value a BINARY SEG keeps as its segment number (gaps become empty segments).
MAX_KEPT_LABEL = 255
#: Default SeriesNumber of a SEG: the source's plus this, so it never equals the source's.
SEG_SERIES_OFFSET = 1000
#: Type-2 attributes of the SEG IOD's modules (patient, study, series, equipment, frame of
#: reference, segmentation image): present, empty when the source does not know them.
_TYPE2 = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber", "PositionReferenceIndicator",
    "ContentDescription", "ContentCreatorName",
)  # fmt: skip
_TRACKING = re.compile(r"^medimg label (\d+)$")


def _load_source(source: PathType | Sequence[Dataset]) -> list[Dataset]:
    if isinstance(source, (str, Path)) or hasattr(source, "__fspath__"):
        folder = Path(source)  # type: ignore[arg-type]
        if not folder.is_dir():
            raise InputError(
                "source series folder not found; pass the folder of the series", folder
            )
        datasets = []
        for f in sorted(p for p in folder.iterdir() if p.is_file()):
            try:
                datasets.append(pydicom.dcmread(f, stop_before_pixels=True))
            except pydicom.errors.InvalidDicomError:
                continue  # a README or thumbnail next to the series
        if not datasets:
            raise InputError("no DICOM files in the source series folder", folder)
        return datasets
    return list(source)  # type: ignore[arg-type]


def sort_by_normal(datasets: Sequence[Dataset]) -> tuple[list[Dataset], np.ndarray]:
    """Sort one single-frame series by position along the slice normal; return it and its affine.

    The affine is RAS+ for our ``(X, Y, Z) = (column, row, slice)`` axes, slices ascending
    along ``row x col``. Raises :class:`InputError` for mixed series, multi-frame instances,
    differing orientations or unevenly spaced slices.
    """
    if len({str(ds.get("SeriesInstanceUID", "")) for ds in datasets}) != 1:
        raise InputError("source holds several series; pass the datasets of one series")
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in datasets):
        raise InputError("source is multi-frame; SEG export needs a single-frame series")
    try:
        iop = np.asarray(datasets[0].ImageOrientationPatient, dtype=np.float64)
        normal = orientation_vectors(iop)[2]
        pos = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
        iops = np.array([[float(v) for v in ds.ImageOrientationPatient] for ds in datasets])
        spacing = [float(v) for v in datasets[0].PixelSpacing]
    except AttributeError as e:
        raise InputError(f"source lacks plane geometry ({e}); it cannot be referenced") from e
    if np.abs(iops - iop).max() > 1e-4:
        raise InputError("source slices differ in ImageOrientationPatient; not one volume")
    order = np.argsort(pos @ normal, kind="stable")
    pos = pos[order]
    n = len(datasets)
    step = (pos[-1] - pos[0]) / (n - 1) if n > 1 else None
    if step is not None and np.abs(pos - (pos[0] + np.arange(n)[:, None] * step)).max() > (
        GRID_TOLERANCE_MM
    ):
        raise InputError("source slices are not evenly spaced (gap or duplicate position)")
    return [datasets[i] for i in order], ras_affine(iop, spacing, pos[0], step)


def _corners(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    idx = np.array(np.meshgrid(*[[0, s - 1] for s in shape], indexing="ij")).reshape(3, -1)
    return (affine[:3, :3] @ idx).T + affine[:3, 3]


def _on_source_grid(
    labels: Image, src_affine: np.ndarray, shape: tuple[int, int, int]
) -> np.ndarray:
    """The label array ``(X, Y, Z)`` in source slice order, or a one-line error if off-grid."""
    vol = labels.array[0] if labels.spatial_ndim == 3 else labels.array[0][..., None]
    if vol.shape != shape:
        raise InputError(
            f"labels have shape {vol.shape}, the source series {shape} (columns, rows, slices); "
            "resample the labels onto the source series grid first"
        )
    aff = labels.affine.copy()
    if shape[2] == 1:  # one slice: the third axis is not part of the grid
        aff[:3, 2] = src_affine[:3, 2]
    flipped = aff.copy()  # a left-handed label grid: same voxels, k reversed
    flipped[:3, 3] += aff[:3, 2] * (shape[2] - 1)
    flipped[:3, 2] *= -1
    for a, v in ((aff, vol), (flipped, vol[:, :, ::-1])):
        if np.abs(_corners(a, shape) - _corners(src_affine, shape)).max() <= GRID_TOLERANCE_MM:
            return v
    raise InputError(
        f"labels do not lie on the source series grid (within {GRID_TOLERANCE_MM} mm); "
        "resample the labels onto the source series first"
    )


def _label_values(
    labels: Image, seg_type: str, segment_names: Mapping[int, str] | None
) -> list[int]:
    """The sorted nonzero label values, after checking labels and arguments."""
    if seg_type not in ("BINARY", "LABELMAP"):
        raise InputError(f"segmentation_type must be 'BINARY' or 'LABELMAP', got {seg_type!r}")
    if labels.num_channels != 1:
        raise InputError(f"labels must have one channel, got {labels.num_channels}")
    arr = labels.array
    if arr.dtype != bool and not np.issubdtype(arr.dtype, np.integer):
        if not (np.all(np.isfinite(arr)) and np.array_equal(arr, np.round(arr))):
            raise InputError("labels must be whole numbers; round or threshold them first")
    values = [int(v) for v in np.unique(arr) if v != 0]
    if not values:
        raise InputError("labels hold no nonzero voxel; there is no segment to write")
    if values[0] < 0 or values[-1] > 65535:
        raise InputError(f"label values must lie in 0..65535, got {values[0]}..{values[-1]}")
    if any(not isinstance(k, (int, np.integer)) for k in segment_names or {}):
        raise InputError(
            f"segment_names keys must be int label values, got {list(segment_names or {})}"
        )
    return values


def write_dicom_seg(
    labels: Image,
    source_series: PathType | Sequence[Dataset],
    path: PathType,
    *,
    segment_names: Mapping[int, str] | None = None,
    segmentation_type: str = "BINARY",
    series_description: str = "medimg segmentation",
    algorithm_name: str = "medimg",
    algorithm_version: str | None = None,
    series_number: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a label map as a DICOM SEG that references its source series.

    Parameters
    ----------
    labels
        ``(1, X, Y[, Z])`` non-negative integer labels on the source grid (same shape; voxel
        centres within :data:`GRID_TOLERANCE_MM`). A k-reversed grid (left-handed affine) is
        accepted and reordered.
    source_series
        Folder of the single-frame source series, or its pydicom datasets (pixel data not
        needed). Slices are matched to our k axis by position along the normal.
    path
        Output ``.dcm`` file.
    segment_names
        Name per label value (default ``"label <v>"``); names of absent labels are ignored.
    segmentation_type
        ``"BINARY"`` (default) or ``"LABELMAP"``.
    series_description
        The SEG's SeriesDescription (and ContentDescription), at most 64 characters kept.
    algorithm_name, algorithm_version
        Every segment's algorithm identification (default: ``"medimg"`` and its version).
    series_number
        Default: the source's SeriesNumber plus :data:`SEG_SERIES_OFFSET`.
    overwrite
        Replace an existing file. The output is checked first (existing file, a path inside
        the source series folder), before the series is read.

    Returns
    -------
    Path
        The written file.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    import medimg

    seg_type = segmentation_type.upper()
    out = Path(path)
    is_folder = isinstance(source_series, (str, Path)) or hasattr(source_series, "__fspath__")
    src_name = Path(source_series) if is_folder else None  # type: ignore[arg-type]
    # before the series is read: never into the series folder (readers would take the SEG for
    # one of its slices), never over an existing file without overwrite
    check_outputs([out], inputs=[src_name] if src_name else [], overwrite=overwrite)
    try:
        values = _label_values(labels, seg_type, segment_names)
    except InputError as e:
        raise InputError(str(e), out) from e
    try:
        datasets, src_affine = sort_by_normal(_load_source(source_series))
    except InputError as e:
        if e.path or src_name is None:
            raise
        raise InputError(str(e), src_name) from e
    shape = (int(datasets[0].Columns), int(datasets[0].Rows), len(datasets))
    try:
        vol = _on_source_grid(labels, src_affine, shape).astype(np.int64)
    except InputError as e:
        raise InputError(str(e), out) from e
    names = dict(segment_names or {})
    if seg_type == "BINARY" and values[-1] > MAX_KEPT_LABEL:
        numbers = list(range(1, len(values) + 1))
        described = list(zip(values, numbers))
    else:  # segment number = label value; BINARY describes the absent values below the max
        numbers = values
        kept = values if seg_type == "LABELMAP" else range(1, values[-1] + 1)
        described = [(v, v) for v in kept]
    lut = np.zeros(values[-1] + 1, dtype=np.uint16)
    lut[values] = numbers
    frames = lut[np.transpose(vol, (2, 1, 0))]  # (slices, rows, columns)
    frames = frames.astype(np.uint8 if max(numbers) < 256 else np.uint16)

    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name[:64], family=codes.cid7162.ArtificialIntelligence,
        version=(algorithm_version or medimg.__version__)[:64],
    )  # fmt: skip
    descriptions = []
    for v, num in described:
        name = str(names.get(v, f"label {v}"))
        code = structure_code(name, v)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=num, segment_label=name[:64],
                segmented_property_category=code.category, segmented_property_type=code.type,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm, tracking_uid=hd.UID(),
                tracking_id=f"medimg label {v}",
                display_color=hd.color.CIELabColor.from_rgb(*code.rgb),
            )
        )  # fmt: skip
    if series_number is None:
        src_number = str(datasets[0].get("SeriesNumber", "") or "0")
        series_number = (int(src_number) if src_number.isdigit() else 0) + SEG_SERIES_OFFSET
    try:
        seg = hd.seg.Segmentation(
            source_images=datasets, pixel_array=frames, segmentation_type=seg_type,
            segment_descriptions=descriptions, series_instance_uid=hd.UID(),
            series_number=series_number, sop_instance_uid=hd.UID(), instance_number=1,
            manufacturer="medimg", manufacturer_model_name="medimg",
            software_versions=medimg.__version__, device_serial_number="0",
            series_description=series_description[:64],
            content_description=series_description[:64], content_creator_name="medimg^",
            omit_empty_frames=True,
        )  # fmt: skip
    except (ValueError, TypeError, AttributeError) as e:
        raise InputError(f"source series cannot be referenced by a SEG: {e}") from e
    for keyword in _TYPE2:
        if keyword not in seg:
            setattr(seg, keyword, "")
    with atomic_path(path, overwrite) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return Path(path)


def read_dicom_seg(path: PathType) -> Image:
    """Read a DICOM SEG into a label map ``(1, X, Y, Z)`` with its RAS+ affine.

    Slices ascend along the normal ``row x col`` (as series readers return them), so labels
    written from a left-handed grid come back with k reversed: the same voxels in world space.

    Segments whose ``TrackingID`` is ``"medimg label <v>"`` get value ``v``; others keep their
    segment number. ``meta["segment_names"]`` maps values to segment labels. A single-frame SEG
    reads back as ``Z = 1``. A SEG without its empty frames reads back as the slab from its
    first to its last stored slice (empty slices between them filled in), voxels at their
    world positions; resample onto the source grid for the whole series.
    """
    import highdicom as hd

    p = Path(path)
    if not p.is_file():
        raise ImageReadError("file not found; check the path", p)
    try:
        seg = hd.seg.segread(p)
        vol = seg.get_volume(combine_segments=True, relabel=False)
    except (OSError, ValueError, AttributeError, pydicom.errors.InvalidDicomError) as e:
        msg = " ".join(str(e).split())[:200]
        raise DicomError(f"not a readable DICOM SEG on a regular grid ({msg})", p) from e
    numbers = seg.get_segment_numbers()
    lut = np.arange(max(numbers) + 1, dtype=np.int64)
    names: dict[int, str] = {}
    for num in numbers:
        desc = seg.get_segment_description(num)
        m = _TRACKING.match(str(getattr(desc, "tracking_id", None) or ""))
        lut[num] = int(m.group(1)) if m else num
        names[int(lut[num])] = str(desc.segment_label)
    data = lut[np.asarray(vol.array).astype(np.int64)]
    data = data.astype(np.uint8 if data.max() < 256 else np.uint16)
    # highdicom's volume axes are (slice, row, column) in LPS; ours (column, row, slice) in RAS
    affine = LPS_TO_RAS @ np.asarray(vol.affine)[:, [2, 1, 0, 3]]
    data = np.transpose(data, (2, 1, 0))
    if np.dot(affine[:3, 2], np.cross(affine[:3, 0], affine[:3, 1])) < 0:
        # slices ascending along row x col, as series readers (ITK, ours) return them
        affine[:3, 3] += affine[:3, 2] * (data.shape[2] - 1)
        affine[:3, 2] *= -1
        data = data[:, :, ::-1]
    meta = {"source": str(p), "segment_names": names, "series_uid": str(seg.SeriesInstanceUID)}
    return Image(data[None], affine, modality="SEG", is_label=True, meta=meta)
