"""Label files that say which model made them.

A label map found later on a disk should tell which model produced it (a default model is
retrained from time to time). The NIfTI gets the model's tag (:func:`~.contract.model_tag`) in
its 80-byte ``descrip`` field; the DICOM-SEG gets it as its series description, and as algorithm
name and version of every segment (the SEG's own place for it).

``medimg.io`` writes NIfTI files without a caller-chosen description, so the tag is put in
here through nibabel (as :func:`medimg.io.formats.write_nifti` does); the SEG gets it through
:func:`medimg.io.dicom.seg.write_dicom_seg`'s ``series_description`` and ``algorithm_*``
arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from medimg.io.image import Image
from medimg.io.output import atomic_path, check_output

__all__ = ["save_labels_nifti", "write_labels_seg"]

NIFTI_DESCRIP_BYTES = 79  # 80 with the terminating NUL
SERIES_DESCRIPTION_CHARS = 64  # DICOM LO


def save_labels_nifti(labels: Image, path: Path, tag: str, *, overwrite: bool = False) -> Path:
    """Write a label map as NIfTI with ``tag`` in its ``descrip`` (the file appears whole)."""
    import nibabel as nib

    check_output(path, overwrite)
    arr = labels.array
    if arr.dtype == bool or arr.dtype.itemsize > 2:
        arr = arr.astype(np.uint8 if int(arr.max(initial=0)) < 256 else np.uint16)
    nii = Image(arr, labels.affine, modality="SEG", is_label=True).to_nibabel()
    nii.header["descrip"] = tag.encode("ascii", "replace")[:NIFTI_DESCRIP_BYTES]
    with atomic_path(path, overwrite) as tmp:
        nib.save(nii, tmp)
    return Path(path)


def write_labels_seg(
    labels: Image,
    source_series: Path,
    path: Path,
    tag: str,
    *,
    segment_names: Mapping[int, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """A DICOM-SEG of ``labels`` referencing ``source_series``, naming the model ``tag``."""
    from medimg.io.dicom.seg import write_dicom_seg

    name, _, digest = tag.rpartition(" sha1:")
    return write_dicom_seg(
        labels, source_series, path, segment_names=segment_names,
        series_description=f"medimg: {tag}"[:SERIES_DESCRIPTION_CHARS],
        algorithm_name=(name or tag)[:SERIES_DESCRIPTION_CHARS],
        algorithm_version=f"sha1:{digest}" if digest and name else None,
        overwrite=overwrite,
    )  # fmt: skip
