"""Output checks the reconstruction verbs make before computing anything: the shared
:func:`medimg.io.output.check_outputs` plus the image format each output's name asks for, so a
bad name is refused before minutes of reconstruction, not after."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from medimg.errors import InputError
from medimg.io.output import check_outputs
from medimg.typing import PathType

__all__ = ["WRITABLE", "check_image_outputs"]

#: extensions :func:`medimg.io.api.save` writes; no extension = a DICOM series folder
WRITABLE = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def check_image_outputs(
    outputs: Iterable[PathType], *, inputs: Iterable[PathType] = (), overwrite: bool = False
) -> list[Path]:
    """Refuse (one line, writing nothing) any output medimg could not write as an image, or
    that :func:`~medimg.io.output.check_outputs` refuses."""
    checked = check_outputs(list(outputs), inputs=list(inputs), overwrite=overwrite)
    for p in checked:
        name = p.name.lower()
        if Path(name).suffix and not name.endswith(WRITABLE):
            raise InputError(
                f"cannot write an image named '{p.name}'; use {', '.join(WRITABLE)}, or a path "
                "without extension for a DICOM series folder",
                p,
            )
        if not Path(name).suffix and p.is_file():
            raise InputError("is a file; a DICOM series output is a folder, name another", p)
    return checked
