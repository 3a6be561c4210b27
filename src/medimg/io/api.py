"""``load`` and ``save``: one entry point for every format, chosen by path.

Files: NIfTI (``.nii``, ``.nii.gz``), ITK formats (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``) and
DICOM (``.dcm``/``.ima`` or any file with the DICM preamble). Folders: DICOM series. Saving to a
path without a known image extension writes a DICOM series into that folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from medimg.errors import ImageReadError, InputError
from medimg.io.image import Image
from medimg.io.inputs import check_regular_file
from medimg.typing import PathType

Format = Literal["nifti", "itk", "dicom"]

_SUFFIXES: dict[str, Format] = {
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".hdr": "nifti",  # read-only: NIfTI/Analyze pairs and FreeSurfer MGH, through nibabel
    ".img": "nifti",
    ".mgz": "nifti",
    ".mgh": "nifti",
    ".nrrd": "itk",
    ".nhdr": "itk",
    ".mha": "itk",
    ".mhd": "itk",
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".ima": "dicom",
}
KNOWN = (
    ".nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd, .dcm and DICOM folders (read also .hdr/.img, .mgz)"
)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _check_source(path: PathType) -> Path:
    """An existing regular file, or a folder (read as a DICOM series) whose name is not that of
    an image file (``x.nii.gz/`` is a mistake, not a series). Special files are refused: a FIFO
    named ``*.dcm`` would block the read forever."""
    p = Path(path)
    if str(path).strip() == "":
        raise InputError("the input path is empty; name an image file or DICOM folder")
    if not p.exists():
        raise ImageReadError("no such file or folder", p)
    if p.is_dir():
        fmt = _SUFFIXES.get(_suffix(p))
        if fmt not in (None, "dicom"):
            raise ImageReadError(
                f"is a folder, not a {_suffix(p)} file; name the image file itself", p
            )
        return p
    return check_regular_file(p)


def check_modality(value: str) -> str:
    """A modality as DICOM stores it (a CS value): upper case, at most 16 characters of A-Z,
    0-9, space and underscore; one-line :class:`InputError` otherwise."""
    text = str(value).strip().upper()
    if not text or len(text) > 16 or any(c not in _CS_CHARS for c in text):
        raise InputError(
            f"modality {str(value)[:40]!r} is not a DICOM modality code (up to 16 letters, digits, "
            "spaces or underscores); use e.g. CT, MR, US, CR, PT or OT"
        )
    return text


_CS_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _")


def format_of(path: PathType) -> Format:
    """The format of an image *file*, from its extension or (no extension) its DICOM preamble."""
    p = Path(path)
    fmt = _SUFFIXES.get(_suffix(p))
    if fmt is None and _has_dicom_preamble(p):
        fmt = "dicom"
    if fmt is None:
        raise ImageReadError(
            f"unknown image format '{_suffix(p) or p.name}'; medimg reads {KNOWN}", p
        )
    return fmt


def load(
    path: PathType,
    *,
    series: str | int | None = None,
    modality: str | None = None,
    is_label: bool = False,
    allow_gaps: bool = False,
    tilt: str = "refuse",
) -> Image:
    """Read an image file or a DICOM series folder into an :class:`Image`.

    ``series`` picks one series (UID or index, see ``medimg info``) in a folder holding several;
    ``allow_gaps`` and ``tilt`` control DICOM slice-geometry checks (see
    :func:`medimg.io.dicom.read.read_dicom`). ``modality`` overrides the modality of formats that
    do not store it (NIfTI, NRRD/MHA); it must be a DICOM code string (see :func:`check_modality`).
    Special files (FIFO, device) and folders named like image files are refused in one line.
    """
    p = _check_source(path)
    if modality:
        modality = check_modality(modality)
    if p.is_dir() or format_of(p) == "dicom":
        from medimg.io.dicom.read import read_dicom

        image = read_dicom(p, series=series, allow_gaps=allow_gaps, tilt=tilt)
        if modality:
            image.modality = modality
        if is_label:
            image.is_label = True
        return image
    kwargs: dict[str, Any] = {"is_label": is_label}
    if modality:
        kwargs["modality"] = modality
    if format_of(p) == "nifti":
        from medimg.io.formats import read_nifti

        return read_nifti(p, **kwargs)
    from medimg.io.formats import read_itk

    return read_itk(p, **kwargs)


def save(image: Image, path: PathType, *, overwrite: bool = False, **dicom_options: Any) -> Path:
    """Write ``image`` to ``path``; the extension picks the format, none means a DICOM folder.

    An empty path is refused (it would mean the working folder). Existing outputs are never
    replaced unless ``overwrite=True``. ``dicom_options`` pass on to
    :func:`medimg.io.dicom.write.write_dicom_series` (series description, patient, UIDs).
    """
    if str(path).strip() == "":  # Path("") is ".": it would write into the working folder
        raise InputError("the output path is empty; name a file (ct.nii.gz) or a folder for DICOM")
    p = Path(path)
    suffix = _suffix(p)
    fmt = _SUFFIXES.get(suffix)
    if fmt is None and suffix and not p.is_dir():
        raise InputError(f"cannot save to '{p.name}': unknown extension; use {KNOWN}")
    if dicom_options and fmt not in (None, "dicom"):
        raise InputError(f"DICOM options {sorted(dicom_options)} do not apply to {suffix} files")
    if fmt == "nifti":
        from medimg.io.formats import write_nifti

        return write_nifti(image, p, overwrite=overwrite)
    if fmt == "itk":
        from medimg.io.formats import write_itk

        return write_itk(image, p, overwrite=overwrite)
    if fmt == "dicom":
        raise InputError(f"'{p.name}': save DICOM into a folder (a path without extension)")
    from medimg.io.dicom.write import write_dicom_series

    write_dicom_series(image, p, overwrite=overwrite, **dicom_options)
    return p


def describe(path: PathType) -> list[str]:
    """Human-readable lines for ``medimg info``: one per DICOM series, or one for an image file."""
    p = _check_source(path)
    if p.is_dir():
        from medimg.io.dicom.series import list_series

        bad: list[str] = []
        found = list_series(p, unreadable=bad)
        if not found:
            raise ImageReadError("no DICOM series found in this folder", p)
        lines = [f"[{i}] {s.line()}" for i, s in enumerate(found)]
        if bad:  # listed, not hidden: reading a series with such a file in it fails
            lines.append(f"skipped {len(bad)} unreadable file(s), e.g. {bad[0]}")
        return lines
    return [f"{p.name}: {load(p)!r}"]
