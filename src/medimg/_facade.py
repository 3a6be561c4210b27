"""What the per-task Python facades (:mod:`medimg.segment`, :mod:`medimg.register`, ...) share:
one reading of a device string and one way to accept an image or a path."""

from __future__ import annotations

import re
from pathlib import Path

from medimg.errors import InputError
from medimg.io.image import Image

__all__ = ["as_image", "check_device"]

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device(device: str = "auto") -> str:
    """``device`` as given when it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` and usable here;
    otherwise a one-line :class:`InputError` (the task classes then resolve ``auto``)."""
    import torch

    spec = str(device).strip().lower()
    if not _DEVICE.fullmatch(spec):
        raise InputError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(
                f"device {spec!r} requested but no CUDA GPU is available; use cpu/auto"
            )
        index = int(spec.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise InputError(
                f"device {spec!r} does not exist: {torch.cuda.device_count()} CUDA GPU(s) here"
            )
    return spec


def as_image(image: Image | str | Path, **load_options: object) -> Image:
    """An :class:`Image` as it is, or a path read with :func:`medimg.io.api.load`."""
    if isinstance(image, Image):
        return image
    if isinstance(image, (str, Path)):
        from medimg.io.api import load

        return load(image, **load_options)  # type: ignore[arg-type]
    raise InputError(f"expected an Image or a path, got {type(image).__name__}")
