"""The exceptions medimg raises for problems a user can fix.

Every message is one line: what is wrong (naming the file or argument) and what to do. The CLI
prints ``error: <message>`` and exits non-zero for any :class:`MedimgError`; anything else is a
bug in medimg and is reported as such.
"""

from __future__ import annotations

from os import PathLike


class MedimgError(Exception):
    """Base class: a problem with the user's input, files or settings."""

    def __init__(self, message: str, path: str | PathLike[str] | None = None) -> None:
        self.path = None if path is None else str(path)
        text = " ".join(str(message).split())  # always one line; a path's breaks shown escaped
        shown = self.path and self.path.replace("\r", "\\r").replace("\n", "\\n")
        super().__init__(f"{shown}: {text}" if shown else text)


class InputError(MedimgError, ValueError):
    """An argument, array or configuration value is invalid."""


class ImageReadError(MedimgError):
    """A file or folder could not be read as an image."""


class DicomError(ImageReadError):
    """A DICOM file or series is unusable as it stands (corrupt, inconsistent, unsupported)."""


class GeometryError(ImageReadError):
    """Slice positions or orientations do not describe a regular grid."""


class OutputExistsError(MedimgError, FileExistsError):
    """Refusing to overwrite an existing file (pass ``overwrite=True`` / ``--overwrite``)."""


class CheckpointError(MedimgError):
    """A checkpoint is missing, incomplete or does not match the model."""
