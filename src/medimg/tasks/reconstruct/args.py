"""argparse ``type=`` checks for the reconstruction verbs' real-valued options (counts use
:func:`medimg.tasks.cli_helpers.positive_int`): a NaN, infinite or out-of-range value is refused
by argparse in one line instead of failing deep inside the physics."""

from __future__ import annotations

import argparse
import math

__all__ = ["finite_float", "fraction", "positive_float"]


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def finite_float(text: str) -> float:
    """Any finite number (NaN and infinities are refused)."""
    return _float(text)


def positive_float(text: str) -> float:
    """A finite number > 0 (pixel size, photon count, acceleration...)."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value:g} is not above 0; give a positive number")
    return value


def fraction(text: str) -> float:
    """A finite number in (0, 1] (dose fraction, ACS fraction)."""
    value = _float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{value:g} is not in (0, 1]; give a fraction like 0.25")
    return value
