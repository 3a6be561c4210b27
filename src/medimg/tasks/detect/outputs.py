"""The output folder of a detection verb, written whole or not at all.

:func:`output_folder` is :func:`medimg.io.output.atomic_dir` (every check made before any work,
the folder swapped in only when complete, an earlier medimg output replaced only with
``overwrite``) plus one thing: parent folders it had to create are removed again when the verb
fails, so a refusal leaves no trace.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from medimg.io.output import atomic_dir
from medimg.typing import PathType

__all__ = ["output_folder"]


@contextmanager
def output_folder(
    path: PathType, overwrite: bool = False, *, inputs: Iterable[PathType] = ()
) -> Iterator[Path]:
    """Yield a private folder that replaces ``path`` when the block succeeds (module doc)."""
    target = Path(path).absolute()
    missing = [p for p in target.parents if not p.exists()]
    try:
        with atomic_dir(path, overwrite, inputs=inputs) as tmp:
            yield tmp
    except BaseException:
        for folder in missing:  # innermost first; rmdir leaves a folder someone filled
            with suppress(OSError):
                folder.rmdir()
        raise
