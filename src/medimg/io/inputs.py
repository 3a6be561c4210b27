"""The input layer: checks every reader and verb makes before it trusts a file.

* regular files only (:func:`check_regular_file`): a FIFO or device named ``*.dcm`` would block
  a read forever;
* a declared size is checked against the file and a memory budget before anything is allocated
  (:func:`check_allocation`, :func:`check_declared_size`);
* complex data only where a verb takes it (:func:`check_real`);
* CSV files read with an encoding check (:func:`read_csv_rows`);
* case ids unique, from relative paths when names collide (:func:`case_ids`).
"""

from __future__ import annotations

import csv
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medimg.errors import ImageReadError, InputError
from medimg.typing import PathType

__all__ = [
    "MEMORY_ENV",
    "case_ids",
    "check_allocation",
    "check_declared_size",
    "check_real",
    "check_regular_file",
    "memory_budget",
    "read_csv_rows",
    "read_text",
]

#: Environment variable: the most bytes one array may take (e.g. ``8G``); default: the
#: memory the machine has available now.
MEMORY_ENV = "MEDIMG_MAX_MEMORY"
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _human(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(nbytes) < 1024 or unit == "PiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} EiB"  # pragma: no cover


def memory_budget() -> int:
    """Bytes one array may take: ``MEDIMG_MAX_MEMORY`` (``512M``, ``8G``...) or the memory
    available now."""
    value = os.environ.get(MEMORY_ENV, "").strip().upper().removesuffix("B").removesuffix("I")
    if value:
        unit = value[-1] if value[-1] in _UNITS else ""
        try:
            return int(float(value[: len(value) - len(unit)]) * _UNITS[unit])
        except ValueError:
            raise InputError(
                f"{MEMORY_ENV}={os.environ[MEMORY_ENV]!r} is not a size; write e.g. 8G or 512M"
            ) from None
    import psutil

    return int(psutil.virtual_memory().available)


def check_allocation(
    shape: Sequence[int], dtype: np.typing.DTypeLike, *, what: str = "the image",
    path: PathType | None = None, copies: float = 1.0,
) -> int:  # fmt: skip
    """Refuse (one line) an array of ``shape``/``dtype`` (times ``copies`` working copies) that
    has negative or zero sides or exceeds :func:`memory_budget`; return its size in bytes."""
    dims = [int(s) for s in shape]
    if any(s <= 0 for s in dims):
        raise InputError(f"{what} has shape {tuple(dims)}: every side must be positive", path)
    nbytes = float(np.prod(np.asarray(dims, dtype=np.float64))) * np.dtype(dtype).itemsize
    need, budget = nbytes * copies, memory_budget()
    if need > budget:
        raise InputError(
            f"{what} of shape {'x'.join(map(str, dims))} needs {_human(need)}, more than the "
            f"{_human(budget)} of memory available; use a smaller size or raise {MEMORY_ENV}",
            path,
        )
    return int(nbytes)


def check_declared_size(
    shape: Sequence[int], dtype: np.typing.DTypeLike, path: PathType, *,
    data_bytes: int | None = None, compressed: bool = False,
) -> None:  # fmt: skip
    """A header's declared array against the file that should hold it and the memory budget.

    ``data_bytes``: bytes the file has for the data (file size minus header offset); an
    uncompressed file must hold the whole array. Compressed data is checked against the budget
    only (its size bounds nothing).
    """
    nbytes = check_allocation(shape, dtype, what="the declared image", path=path)
    if not compressed and data_bytes is not None and nbytes > data_bytes:
        raise ImageReadError(
            f"header declares {'x'.join(map(str, shape))} voxels ({_human(nbytes)}) but the file "
            f"holds {_human(max(data_bytes, 0))}; the file is truncated or its header is corrupt",
            path,
        )


def check_regular_file(path: PathType) -> Path:
    """Refuse a path that is not a regular file (FIFO, socket, device: reading could block)."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise ImageReadError("no such file; check the path", p) from None
    except OSError as e:
        raise ImageReadError(f"cannot be read ({e.strerror}); check its permissions", p) from None
    if not stat.S_ISREG(mode):
        kind = "folder" if stat.S_ISDIR(mode) else "special file (FIFO, socket or device)"
        raise ImageReadError(f"is a {kind}, not a regular file; name an image file", p)
    return p


def check_real(array: np.ndarray, path: PathType | None = None, *, what: str = "this verb") -> None:
    """Refuse complex data where only real images make sense (the imaginary part would be
    silently dropped)."""
    if np.iscomplexobj(array):
        raise InputError(
            f"holds complex values, which {what} does not take (the imaginary part would be "
            "lost); pass its magnitude (abs) or real part as a real image",
            path,
        )


def read_text(path: PathType) -> str:
    """A text file's content, decoded as UTF-8 (a BOM is allowed); refuses in one line naming
    the file a special file, text that is not UTF-8 (with the first bad byte's offset) and
    binary content (NUL bytes)."""
    p = check_regular_file(path)
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(
            f"is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); save it as UTF-8",
            p,
        ) from None
    if "\x00" in text:
        raise InputError("holds NUL bytes, so it is not a text file; check the path", p)
    return text


def read_csv_rows(path: PathType, *, required: Sequence[str] = ()) -> list[dict[str, str]]:
    """Rows of a CSV file with a header line, read as UTF-8 (a BOM is allowed).

    Refuses, in one line naming the file: a special file, text that is not UTF-8 (with the
    offset of the first bad byte), a missing header, and missing ``required`` columns.
    """
    p = Path(path)
    text = read_text(p)
    try:
        reader = csv.DictReader(text.splitlines())
        rows = list(reader)
    except csv.Error as e:
        raise InputError(f"is not a valid CSV file ({e})", p) from None
    columns = reader.fieldnames or []
    if not columns:
        raise InputError("is empty or has no header line; the first line names the columns", p)
    missing = [c for c in required if c not in columns]
    if missing:
        raise InputError(
            f"lacks column(s) {', '.join(missing)} (has {', '.join(map(str, columns))})", p
        )
    return rows


def _id_of(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".npz", ".png"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def case_ids(paths: Sequence[PathType], root: PathType | None = None) -> list[str]:
    """One id per input, unique, safe as a file name: the file or folder name without its
    image extension; where two inputs share it, their paths relative to ``root`` (or to their
    common folder) with ``/`` written as ``__``. Two inputs that are the same file are refused,
    naming both."""
    ps = [Path(p) for p in paths]
    ids = [_id_of(p) for p in ps]
    if len(set(ids)) == len(ids):
        return ids
    resolved = [Path(os.path.abspath(p)) for p in ps]
    base = Path(root) if root is not None else Path(os.path.commonpath(resolved))
    if base in resolved:
        base = base.parent
    out = []
    for p in resolved:
        rel = p.relative_to(os.path.abspath(base)) if p.is_relative_to(os.path.abspath(base)) else p
        parts = [*rel.parent.parts, _id_of(rel)]
        out.append("__".join(x for x in parts if x not in ("", "/")))
    seen: dict[str, int] = {}
    for i, name in enumerate(out):
        if name in seen:
            same = resolved[i] == resolved[seen[name]]
            why = "the same file twice" if same else "their names collide"
            raise InputError(
                f"names the same case as {ps[seen[name]]} ({why}); give each case once, under a "
                "name of its own",
                ps[i],
            )
        seen[name] = i
    return out
