"""``medimg superres train|predict|evaluate``: thick slices to thin (through-plane SR)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

__all__ = ["add_verbs"]


def add_verbs(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    """Add the super-resolution verbs to ``medimg superres``."""
    parser.add_subparsers(dest="verb", metavar="<verb>")
