"""Device names, read one way everywhere (CLI flags, the Python API, training configs):
``auto``, ``cpu``, ``cuda`` or ``cuda:N``. Torch-free, so the CLI can check a flag before torch
is imported; whether the GPU exists is checked by :func:`medimg.engine.resolve_device`."""

from __future__ import annotations

import re

from medimg.errors import InputError

__all__ = ["DEVICE_NAMES", "parse_device"]

DEVICE_NAMES = "auto, cpu, cuda or cuda:N"
_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def parse_device(device: object) -> str:
    """The device name in lower case, or a one-line :class:`InputError` naming the choices."""
    spec = str(device).strip().lower()
    if not _DEVICE.fullmatch(spec):
        raise InputError(f"device must be {DEVICE_NAMES}, got {device!r}")
    return spec
