"""What every task's command-line group shares: a verb whose ``--help`` ends with a worked
example, and the torch thread count of ``--threads``. Light on purpose (torch is imported only
when a thread count is set), so ``medimg --help`` stays fast."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence

__all__ = ["add_verb", "non_negative_int", "positive_int", "set_threads"]


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
