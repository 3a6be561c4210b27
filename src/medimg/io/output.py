"""Writing safely: never overwrite without being asked, never leave a half-written file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medimg.errors import OutputExistsError
from medimg.typing import PathType


def check_output(path: PathType, overwrite: bool = False) -> Path:
    """Return ``path`` as a Path after making sure writing there loses nothing.

    Raises :class:`OutputExistsError` if the file (or a non-empty folder) exists and
    ``overwrite`` is false. Creates the parent folder.
    """
    p = Path(path)
    exists = p.is_file() or (p.is_dir() and any(p.iterdir()))
    if exists and not overwrite:
        raise OutputExistsError(
            "already exists; pass --overwrite (overwrite=True) to replace it", p
        )
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


@contextmanager
def atomic_path(path: PathType, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    An interrupt or error inside the block leaves any existing file untouched. The temporary
    name keeps the final suffixes (``.nii.gz``) so writers that dispatch on extension still work.
    """
    target = check_output(path, overwrite)
    suffix = "".join(target.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
