"""``medimg synthesize train|predict|evaluate``: MR -> CT and CT -> MR synthesis."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

__all__ = ["add_verbs"]


def add_verbs(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    """Add the synthesis verbs to ``medimg synthesize``."""
    parser.add_subparsers(dest="verb", metavar="<verb>")
