"""NIfTI (nibabel) and ITK formats (NRRD, MetaImage; SimpleITK): read into and write from Image.

These formats store voxels and geometry but not the modality, so readers take ``modality=``;
whether a file is a label map is also the caller's knowledge (``is_label=``). Readers return
float32 intensity images (the pipeline's convention) and keep the file's integer dtype for
label maps. Writers store float data as float32 and keep integer dtypes, except 64-bit
integers (numpy's default), stored as the smallest integer type that holds the values.

Conventions at the file edge:

- NIfTI: nibabel's affine (sform when its code is set, else qform) is already RAS+. Channels are
  the 4th axis ``(X, Y, Z, C)``. A 2D image with several channels is written as a 5D vector
  image ``(X, Y, 1, 1, C)`` (as ITK writes one) and read back as 2D.
- NRRD/MetaImage: LPS world, converted by :meth:`Image.from_sitk` / :meth:`Image.to_sitk`;
  several channels are stored as vector pixels. ``.nhdr`` and ``.mhd`` write a header plus a
  detached data file next to it; both are checked for overwrite and moved in together.
"""

from __future__ import annotations

import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np

from medimg.errors import ImageReadError, InputError, OutputExistsError
from medimg.io.image import Image
from medimg.io.output import atomic_path, check_output
from medimg.typing import PathType

__all__ = ["ITK_SUFFIXES", "NIFTI_SUFFIXES", "read_itk", "read_nifti", "write_itk", "write_nifti"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: Read-only, also through nibabel: NIfTI/Analyze header+image pairs and FreeSurfer MGH.
NIBABEL_READ_SUFFIXES = (*NIFTI_SUFFIXES, ".hdr", ".img", ".mgz", ".mgh")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
_NIFTI_INTENT_VECTOR = 1007


def _suffix(path: Path, allowed: tuple[str, ...]) -> str | None:
    name = path.name.lower()
    return next((s for s in sorted(allowed, key=len, reverse=True) if name.endswith(s)), None)


def _check_readable(path: PathType, allowed: tuple[str, ...], other: str) -> Path:
    p = Path(path)
    if _suffix(p, allowed) is None:
        raise ImageReadError(
            f"unknown extension; expected one of {', '.join(allowed)} ({other})", p
        )
    if not p.is_file():
        raise ImageReadError("file not found; check the path", p)
    return p


def _check_writable(image: Image, path: PathType, allowed: tuple[str, ...], other: str) -> Path:
    p = Path(path)
    if _suffix(p, allowed) is None:
        raise InputError(f"unknown extension; name the file with one of {', '.join(allowed)} "
                         f"({other})", p)  # fmt: skip
    if np.iscomplexobj(image.array):
        raise InputError("complex data cannot be written; write abs() or real/imag channels", p)
    return p


def _label_array(arr: np.ndarray, path: Path) -> np.ndarray:
    """Integer labels as stored; float labels converted when every value is a whole number."""
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        return arr
    if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
        raise ImageReadError(
            "label map holds non-integer values; read it with is_label=False", path
        )
    lo, hi = int(arr.min()), int(arr.max())
    return arr.astype(np.result_type(np.min_scalar_type(lo), np.min_scalar_type(hi)))


def _finish(image: Image, path: Path, allow_nonfinite: bool) -> Image:
    """Apply the dtype conventions and the NaN/Inf check to a freshly read image."""
    if image.is_label:
        image.array = _label_array(image.array, path)
    elif not np.iscomplexobj(image.array):
        image.array = image.array.astype(np.float32, copy=False)
    if not allow_nonfinite:
        image.check_finite(str(path))
    image.meta.setdefault("source", str(path))
    return image


def _storable(image: Image, path: Path, allow_nonfinite: bool) -> np.ndarray:
    """The array as it will be stored: bool as uint8, floats as float32, 64-bit integers as the
    smallest integer type holding the values (numpy's default int64 is unreadable to many
    NIfTI tools), other integers unchanged."""
    if not allow_nonfinite:
        image.check_finite(str(path))
    arr = image.array
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32, copy=False)
    if np.issubdtype(arr.dtype, np.integer) and arr.dtype.itemsize == 8:
        lo, hi = int(arr.min()), int(arr.max())
        return arr.astype(np.result_type(np.min_scalar_type(lo), np.min_scalar_type(hi)))
    return arr


# ------------------------------------------------------------------------------------- NIfTI
def read_nifti(
    path: PathType, *, modality: str = "OT", is_label: bool = False, allow_nonfinite: bool = False
) -> Image:
    """Read a ``.nii`` / ``.nii.gz`` file (NIfTI-1 or NIfTI-2) with nibabel; also a
    ``.hdr``/``.img`` pair (NIfTI or Analyze 7.5) or a FreeSurfer ``.mgz``/``.mgh`` volume.

    Parameters
    ----------
    path
        The file.
    modality
        Modality code to attach (NIfTI does not store one), e.g. ``"CT"`` or ``"MR"``.
    is_label
        Read as a label map: integer dtype kept (float files with whole-number values are
        converted to the smallest integer type that holds them).
    allow_nonfinite
        Accept NaN/Inf voxels instead of raising :class:`~medimg.errors.InputError`.

    Returns
    -------
    Image
        ``(C, X, Y[, Z])`` with nibabel's affine (sform preferred over qform), float32 unless a
        label map. A 4th axis becomes channels.
    """
    import nibabel as nib

    p = _check_readable(path, NIBABEL_READ_SUFFIXES, "use read_itk for NRRD/MetaImage")
    try:
        img = nib.load(p)
        if not hasattr(img, "affine"):  # CIFTI-2: grayordinates, no voxel grid
            raise ImageReadError(
                f"is a {type(img).__name__.removesuffix('Image')} file (surface/grayordinate "
                "data, no voxel grid), not a volume; use the NIfTI volume it was made from",
                p,
            )
        data = np.asanyarray(img.dataobj)  # applies scl_slope/scl_inter when set
        affine = np.asarray(img.affine, dtype=np.float64)
        intent = int(img.header.get("intent_code", 0)) if hasattr(img.header, "get") else 0
    except (OSError, ValueError, EOFError, zlib.error, nib.filebasedimages.ImageFileError) as e:
        msg = " ".join(str(e).split())[:200]
        raise ImageReadError(
            f"not a readable NIfTI file ({msg}); re-export or replace it", p
        ) from e
    if data.ndim == 5 and intent == _NIFTI_INTENT_VECTOR and data.shape[2:4] == (1, 1):
        arr = np.moveaxis(data[:, :, 0, 0, :], -1, 0)  # a 2D vector image, as we write one
        image = Image(arr, affine, modality=modality, is_label=is_label)
    else:
        try:  # hand over the data already read (the file is not decompressed twice)
            loaded = type(img)(data, affine, header=img.header)
            image = Image.from_nibabel(loaded, modality=modality, is_label=is_label)
        except InputError as e:
            raise ImageReadError(str(e), p) from e
    return _finish(image, p, allow_nonfinite)


def write_nifti(
    image: Image, path: PathType, *, overwrite: bool = False, allow_nonfinite: bool = False
) -> Path:
    """Write ``image`` as ``.nii`` or ``.nii.gz`` (sform and qform both set, units mm).

    Channels go to the 4th axis; a 2D image with several channels is written as a 5D vector
    image ``(X, Y, 1, 1, C)``. Float data is stored as float32, bool as uint8, 64-bit integers
    as the smallest integer type that holds the values, other integers unchanged. The file
    appears only once completely written.

    Raises
    ------
    OutputExistsError
        The file exists and ``overwrite`` is false (the file is left untouched).
    InputError
        Unknown extension, complex data, or NaN/Inf voxels (unless ``allow_nonfinite``).
    """
    import nibabel as nib

    p = _check_writable(image, path, NIFTI_SUFFIXES, "use write_itk for NRRD/MetaImage")
    arr = _storable(image, p, allow_nonfinite)
    if arr.dtype.itemsize == 8 and np.issubdtype(arr.dtype, np.integer):
        raise InputError("integer values beyond the 32-bit range; NIfTI tools cannot read them, "
                         "rescale the data or write NRRD/MetaImage", p)  # fmt: skip
    stored = Image(arr, image.affine, modality=image.modality, is_label=image.is_label)
    nii = stored.to_nibabel()
    if image.spatial_ndim == 2 and image.num_channels > 1:
        data = np.moveaxis(arr, 0, -1)[:, :, None, None, :]
        nii = nib.Nifti1Image(data, image.affine, header=nii.header)
        nii.header.set_intent("vector")
    with atomic_path(p, overwrite) as tmp:
        nib.save(nii, tmp)
    return p


# ------------------------------------------------------------------------------ NRRD / MHA
def _itk_reason(e: Exception) -> str:
    """ITK's multi-line message (with source locations) cut down to its ERROR line and the last."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    err = next((ln.split("): ", 1)[-1] for ln in lines if "ERROR" in ln), None)
    parts = [err] if err else []
    if lines and lines[-1] != err and "ERROR" not in lines[-1]:
        parts.append(lines[-1])
    return " ".join(parts)[:200] or "unknown error"


def read_itk(
    path: PathType, *, modality: str = "OT", is_label: bool = False, allow_nonfinite: bool = False
) -> Image:
    """Read ``.nrrd``, ``.nhdr``, ``.mha`` or ``.mhd`` with SimpleITK (LPS converted to RAS+).

    Vector pixels become channels. Parameters as :func:`read_nifti`.
    """
    import SimpleITK as sitk

    p = _check_readable(path, ITK_SUFFIXES, "use read_nifti for .nii/.nii.gz")
    try:
        img = sitk.ReadImage(str(p))
    except RuntimeError as e:
        msg = _itk_reason(e)
        raise ImageReadError(
            f"not a readable image file ({msg}); re-export or replace it", p
        ) from e
    try:
        image = Image.from_sitk(img, modality=modality, is_label=is_label)
    except InputError as e:
        raise ImageReadError(str(e), p) from e
    return _finish(image, p, allow_nonfinite)


def write_itk(
    image: Image, path: PathType, *, overwrite: bool = False, allow_nonfinite: bool = False
) -> Path:
    """Write ``image`` as ``.nrrd``, ``.nhdr``, ``.mha`` or ``.mhd`` (zlib-compressed, lossless).

    Several channels are stored as vector pixels. A 2D image must lie in the z = 0 plane
    (ITK's 2D geometry has no z); other 2D images raise. For the detached formats (``.nhdr``,
    ``.mhd``) the data file written beside the header is also refused if it exists. Files
    appear only once completely written. Raises as :func:`write_nifti`.
    """
    import SimpleITK as sitk

    p = _check_writable(image, path, ITK_SUFFIXES, "use write_nifti for .nii/.nii.gz")
    if image.spatial_ndim == 2 and np.abs(image.affine[2, [0, 1, 3]]).max() > 1e-6:
        # ITK's 2D images have a 2x2 direction and a 2D origin: the plane's z would be dropped
        raise InputError(
            "a 2D image off the z = 0 axial plane cannot be stored in a 2D NRRD/MetaImage "
            "without losing its position; add a slice axis (Image(image.array[..., None], "
            "image.affine)) or write NIfTI",
            p,
        )
    arr = _storable(image, p, allow_nonfinite)
    check_output(p, overwrite)
    img = Image(arr, image.affine, modality=image.modality, is_label=image.is_label).to_sitk()
    # Write into a private folder under the final names (a detached header names its data
    # file), then move the data file(s) in before the header.
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{p.name}.", dir=p.parent))
    try:
        sitk.WriteImage(img, str(tmpdir / p.name), useCompression=True)
        written = sorted(tmpdir.iterdir(), key=lambda f: f.name == p.name)  # header last
        for f in written:
            if (p.parent / f.name).exists() and not overwrite:
                raise OutputExistsError(
                    "already exists; pass --overwrite (overwrite=True) to replace it",
                    p.parent / f.name,
                )
        for f in written:
            f.replace(p.parent / f.name)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return p
