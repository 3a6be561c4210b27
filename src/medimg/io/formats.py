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

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import ImageReadError, InputError, MedimgError, OutputExistsError
from medimg.io.image import Image, nifti_channels_first, quiet_sitk
from medimg.io.inputs import (
    MEMORY_ENV,
    check_allocation,
    check_declared_size,
    check_regular_file,
)
from medimg.io.native import held_stderr
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
    return check_regular_file(p)  # a FIFO would block the read forever


@contextmanager
def _reading(path: Path, kind: str) -> Iterator[None]:
    """Turn whatever a third-party parser raises on a damaged file into one line naming it."""
    try:
        yield
    except MedimgError:
        raise
    except MemoryError:
        raise ImageReadError(
            f"not enough memory to read it; free memory or check its header (set {MEMORY_ENV} "
            "to bound what medimg may allocate)",
            path,
        ) from None
    except Exception as e:  # nibabel/ITK raise many kinds (HeaderDataError, EOFError, zlib...)
        msg = " ".join(str(e).split())[:200] or type(e).__name__
        raise ImageReadError(f"not a readable {kind} file ({msg}); re-export or replace it",
                             path) from None  # fmt: skip


def _load_nibabel(p: Path, is_label: bool) -> tuple[Any, np.ndarray, int]:
    """The nibabel image, its data (scaled) and intent code; the declared size is checked
    against the file and the memory budget before the data is read."""
    import nibabel as nib

    img = nib.load(p)
    if not hasattr(img, "affine"):  # CIFTI-2: grayordinates, no voxel grid
        raise ImageReadError(
            f"is a {type(img).__name__.removesuffix('Image')} file (surface/grayordinate "
            "data, no voxel grid), not a volume; use the NIfTI volume it was made from",
            p,
        )
    shape = tuple(int(s) for s in img.header.get_data_shape())
    stored = np.dtype(img.get_data_dtype())
    data_file = Path(img.file_map["image"].filename or p)
    if data_file != p:  # .hdr/.img pair: the data file must be a regular file too
        check_regular_file(data_file)
    compressed = data_file.name.lower().endswith((".gz", ".mgz", ".bz2", ".zst"))
    offset = int(getattr(img.dataobj, "offset", 0) or 0)
    size = data_file.stat().st_size - offset
    check_declared_size(shape, stored, p, data_bytes=size, compressed=compressed)
    if shape and not is_label:  # the float32 result beside the stored data
        channels = len(stored.names or ()) or 1
        check_allocation(shape, np.dtype((np.float32, channels)), path=p,
                         copies=1 + stored.itemsize / (4 * channels))  # fmt: skip
    data = np.asanyarray(img.dataobj)  # applies scl_slope/scl_inter when set
    intent = int(img.header.get("intent_code", 0)) if hasattr(img.header, "get") else 0
    return img, data, intent


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
        label map. A 4th axis becomes channels; RGB/RGBA voxels become 3/4 float32 channels.

    Raises
    ------
    ImageReadError
        One line naming the file: not a regular file, damaged or truncated, a header declaring
        more data than the file holds or than memory allows (checked before reading the data).
    """
    p = _check_readable(path, NIBABEL_READ_SUFFIXES, "use read_itk for NRRD/MetaImage")
    with _reading(p, "NIfTI" if _suffix(p, NIFTI_SUFFIXES) else "Analyze/MGH"):
        img, data, intent = _load_nibabel(p, is_label)
        affine = np.asarray(img.affine, dtype=np.float64)
    try:
        if data.ndim == 5 and intent == _NIFTI_INTENT_VECTOR and data.shape[2:4] == (1, 1):
            arr = np.moveaxis(data[:, :, 0, 0, :], -1, 0)  # a 2D vector image, as we write one
        else:
            arr = nifti_channels_first(data)
        image = Image(arr, affine, modality=modality, is_label=is_label)
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
    description = image.meta.get("description")
    if description:  # who made the file (medimg.engine.provenance): 79 bytes + NUL
        nii.header["descrip"] = str(description).encode("ascii", "replace")[:79]
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


_HEADER_BYTES = 1 << 16  # NRRD/MetaImage headers are short text
_MAX_ITK_DIM = 5  # ITK's image IO reads at most 5 dimensions
#: Header fields (NRRD and MetaImage, lower case) checked before ITK reads the file.
_CHECKED_FIELDS = ("dimension", "ndims", "data file", "datafile", "elementdatafile", "encoding",
                   "compresseddata", "sizes", "dimsize", "type", "elementtype")  # fmt: skip


@dataclass
class _ItkHeader:
    """What the reader needs from a NRRD/MetaImage header before ITK reads the data."""

    data_file: Path  # the file holding the voxels (the header file itself when attached)
    offset: int  # bytes before the data in data_file (attached: the header's length)
    compressed: bool


def _itk_header(p: Path) -> _ItkHeader:
    """Parse the header text: where the data is and whether it is compressed.

    Detached data files must be plain relative paths inside the header's folder (a header must
    not make medimg read ``/etc/passwd`` or ``../../x``) and regular files; multi-file data
    (``LIST``, NRRD's ``%d`` patterns) is refused.
    """
    with p.open("rb") as f:
        head = f.read(_HEADER_BYTES)
    nrrd = head.startswith(b"NRRD")
    given: dict[str, list[str]] = {}
    offset = len(head)
    pos = 0
    for raw in head.splitlines(keepends=True):
        pos += len(raw)
        line = raw.decode("latin-1").strip()
        if nrrd and not line:  # the blank line ends a NRRD header
            offset = pos
            break
        key, sep, value = line.partition(":" if nrrd else "=")
        if nrrd and ":=" in line:  # key/value pairs, not fields
            continue
        if sep:
            given.setdefault(" ".join(key.lower().split()), []).append(value.strip())
        if not nrrd and key.strip().lower() == "elementdatafile":
            offset = pos  # the last line of a MetaImage header
            break
    twice = sorted(k for k in _CHECKED_FIELDS if len(given.get(k, ())) > 1)
    if twice:  # which one ITK would use is not ours to guess: it could bypass these checks
        raise ImageReadError(f"header gives {', '.join(twice)} more than once; fix the header", p)
    fields = {k: v[0] for k, v in given.items()}
    ndim = fields.get("dimension" if nrrd else "ndims", "")
    if (
        not (ndim.isascii() and ndim.isdigit()) or not 1 <= int(ndim) <= _MAX_ITK_DIM
    ):  # ITK loops/allocates per dim
        raise ImageReadError(
            f"header declares {ndim[:20] or 'no'} dimensions; medimg reads 2D and 3D images "
            "(re-export the file)",
            p,
        )
    name = (
        fields.get("data file", fields.get("datafile")) if nrrd else fields.get("elementdatafile")
    )
    if nrrd:
        compressed = fields.get("encoding", "raw").lower() not in ("raw",)
    else:
        compressed = fields.get("compresseddata", "false").lower() == "true"
    if not name or (not nrrd and name.upper() == "LOCAL"):
        return _ItkHeader(p, offset, compressed)
    if name.upper().startswith("LIST") or "%" in name:
        raise ImageReadError(
            f"its data is split over several files ({name!r}); medimg reads one data file per "
            "header, combine them into one .nrrd/.mha file first",
            p,
        )
    if os.path.isabs(name) or ".." in Path(name).parts:
        raise ImageReadError(
            f"its header points at data file {name!r} outside its folder; medimg only reads a "
            "data file beside the header, move it there and name it relatively",
            p,
        )
    data = p.parent / name
    if not data.exists():
        raise ImageReadError(f"its data file {name} is missing; put it beside the header", p)
    return _ItkHeader(check_regular_file(data), 0, compressed)


@contextmanager
def _itk_stderr(p: Path) -> Iterator[None]:
    """Hold back what ITK's C++ code prints on stderr (MetaIO parse notes bypass Python); if the
    read fails, ITK's own first note becomes the reason in the one-line error."""
    try:
        with held_stderr() as held:
            yield
    except RuntimeError as e:
        reason = _itk_reason(e)
        if held.first_line and "ERROR" not in reason:  # ITK's own note says more
            reason = held.first_line
        raise ImageReadError(f"not a readable image file ({reason}); re-export or replace it",
                             p) from None  # fmt: skip


def _check_itk_declared(reader: Any, header: _ItkHeader, p: Path) -> None:
    """The size ITK's header pass found, against the data file and the memory budget."""
    import SimpleITK as sitk

    size = tuple(int(s) for s in reader.GetSize())
    kind = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    bits = re.search(r"(\d+)-bit", kind)
    itemsize = (int(bits.group(1)) // 8 if bits else 8) * (2 if "complex" in kind else 1)
    voxel = np.dtype((np.uint8, itemsize * max(1, int(reader.GetNumberOfComponents()))))
    data_bytes = header.data_file.stat().st_size - header.offset
    check_declared_size(size, voxel, p, data_bytes=data_bytes, compressed=header.compressed)
    geometry = [*reader.GetSpacing(), *reader.GetOrigin(), *reader.GetDirection()]
    if not all(np.isfinite(geometry)) or min(reader.GetSpacing()) <= 0:
        raise ImageReadError(
            f"header gives spacing {reader.GetSpacing()} / origin {reader.GetOrigin()}: NaN, "
            "infinite or non-positive values; fix the header's geometry",
            p,
        )
    nd = len(reader.GetSize())
    direction = np.reshape(reader.GetDirection(), (nd, nd))
    # direction cosines lie in [-1, 1] and span the space; ITK's reader spun for minutes on
    # a MetaImage TransformMatrix holding 1e308
    if np.abs(direction).max() > 1 + 1e-3 or abs(np.linalg.det(direction)) < 1e-6:
        raise ImageReadError(
            f"header's direction matrix {[float(f'{v:.4g}') for v in direction.ravel()]} is "
            "not a set of "
            "direction cosines (a rotation); fix the header's geometry",
            p,
        )


def read_itk(
    path: PathType, *, modality: str = "OT", is_label: bool = False, allow_nonfinite: bool = False
) -> Image:
    """Read ``.nrrd``, ``.nhdr``, ``.mha`` or ``.mhd`` with SimpleITK (LPS converted to RAS+).

    Vector pixels become channels. Parameters and errors as :func:`read_nifti`; a detached data
    file must lie beside its header (a relative name without ``..``), in one piece.
    """
    sitk = quiet_sitk()
    p = _check_readable(path, ITK_SUFFIXES, "use read_nifti for .nii/.nii.gz")
    header = _itk_header(p)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    # the IO that matches the extension, never one ITK guesses from the content
    reader.SetImageIO("NrrdImageIO" if p.suffix.lower() in (".nrrd", ".nhdr") else "MetaImageIO")
    with _reading(p, "image"), _itk_stderr(p):
        reader.ReadImageInformation()
        _check_itk_declared(reader, header, p)
        img = reader.Execute()
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
    sitk = quiet_sitk()
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
    if image.meta.get("description"):  # NRRD writes it as a key:=value field
        img.SetMetaData("description", str(image.meta["description"]))
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
