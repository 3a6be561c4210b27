"""Native libraries' direct stderr output (ITK's MetaIO notes, Rust codec panic messages) held
back while they run, so a damaged file gives one error line and not pages of C++/Rust notes.

Python's ``warnings``/``logging`` cannot reach this output: it is written to file descriptor 2
from compiled code. :func:`held_stderr` points fd 2 at a temporary file for the duration and
hands back what was written (the caller may use it as the reason in its one-line error). With
``MEDIMG_DEBUG`` set nothing is held back.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["held_stderr"]


class Held:
    """What native code wrote on stderr while it was held (filled when the block ends)."""

    def __init__(self) -> None:
        self.text = ""

    @property
    def first_line(self) -> str:
        return next((ln.strip() for ln in self.text.splitlines() if ln.strip()), "")


@contextmanager
def held_stderr(limit: int = 4096) -> Iterator[Held]:
    """Redirect fd 2 to a temporary file inside the block; its first ``limit`` bytes end up in
    the yielded :class:`Held` (also when the block raises)."""
    held = Held()
    if os.environ.get("MEDIMG_DEBUG"):
        yield held
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield held
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            held.text = sink.read(limit).decode("latin-1")
