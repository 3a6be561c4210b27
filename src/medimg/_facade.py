"""What the per-task Python facades (:mod:`medimg.segment`, :mod:`medimg.register`, ...) share:
one reading of a device string and one way to accept an image or a path."""

from __future__ import annotations

from pathlib import Path

from medimg.errors import InputError
from medimg.io.image import Image

__all__ = ["as_image", "check_device"]


def check_device(device: str = "auto") -> str:
    """``device`` as given when it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` and usable here;
    otherwise a one-line :class:`InputError` (the task classes then resolve ``auto``)."""
    from medimg.devices import parse_device
    from medimg.engine import resolve_device

    spec = parse_device(device)
    if spec != "auto":
        resolve_device(spec)  # refuses a GPU that is not here
    return spec


def as_image(image: Image | str | Path, **load_options: object) -> Image:
    """An :class:`Image` as it is, or a path read with :func:`medimg.io.api.load`."""
    if isinstance(image, Image):
        return image
    if isinstance(image, (str, Path)):
        from medimg.io.api import load

        return load(image, **load_options)  # type: ignore[arg-type]
    raise InputError(f"expected an Image or a path, got {type(image).__name__}")
