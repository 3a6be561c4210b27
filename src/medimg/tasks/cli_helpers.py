"""What every task's command-line group shares: a verb whose ``--help`` ends with a worked
example, and the torch thread count of ``--threads``. Light on purpose (torch is imported only
when a thread count is set), so ``medimg --help`` stays fast."""

from __future__ import annotations

import argparse
import math
import textwrap
from collections.abc import Sequence

__all__ = [
    "add_verb",
    "finite_float",
    "fraction",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "probability",
    "set_threads",
]


def add_verb(
    sub: argparse._SubParsersAction,
    name: str,
    help_: str,
    example: str,
    aliases: Sequence[str] = (),
) -> argparse.ArgumentParser:
    """A sub-command ``name`` with ``help_`` (``%%`` for a literal ``%``, as argparse wants in
    help strings) and an epilog showing ``example``."""
    return sub.add_parser(
        name,
        help=help_,
        description=help_.replace("%%", "%"),
        aliases=list(aliases),
        epilog="example:\n" + textwrap.indent(example.strip(), "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def set_threads(n: int | None) -> None:
    """``torch.set_num_threads(n)`` when ``n`` is given. One thread is often the fast choice on a
    shared CPU: OpenMP workers spin-wait when the cores are oversubscribed."""
    if n is not None:
        import torch

        torch.set_num_threads(max(1, int(n)))


def positive_int(text: str) -> int:
    """argparse ``type=`` for counts that must be at least 1 (``--cases``, ``--threads``...)."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse ``type=`` for counts that may be 0 (``--seed``, ``--instance-opt``...)."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value} is below {low}; give a number >= {low}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def finite_float(text: str) -> float:
    """argparse ``type=``: any finite number (NaN and infinities are refused)."""
    return _float(text)


def positive_float(text: str) -> float:
    """argparse ``type=``: a finite number > 0 (spacing, photon count, learning rate...)."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value:g} is not above 0; give a positive number")
    return value


def fraction(text: str) -> float:
    """argparse ``type=``: a finite number in (0, 1] (dose fraction, ACS fraction...)."""
    value = _float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{value:g} is not in (0, 1]; give a fraction like 0.25")
    return value


def probability(text: str) -> float:
    """argparse ``type=``: a finite number in [0, 1] (a score or probability threshold...)."""
    value = _float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value:g} is not in [0, 1]; give a value like 0.5")
    return value
