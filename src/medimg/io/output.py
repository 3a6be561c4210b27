"""Writing safely, the one output layer every verb uses.

Rules (README: "nothing is lost"):

* validate every output before any work (:func:`check_outputs`): nothing is written on refusal;
* never replace an existing file or non-empty folder without ``overwrite``;
* never write an output onto or inside an input, nor replace a folder that holds an input;
* a file appears only once complete (:func:`atomic_path`); a folder is written beside its target
  and swapped in whole (:func:`atomic_dir`: old moved aside, new moved in, old deleted; an
  interrupt at any point leaves the old folder or the complete new one);
* never delete a folder medimg did not create: folders it writes carry :data:`OWNER_MARK`;
* files and folders get the permissions the user's umask gives (not ``mkstemp``'s 0600).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from medimg.errors import InputError, OutputExistsError
from medimg.typing import PathType

__all__ = [
    "OWNER_MARK",
    "atomic_dir",
    "atomic_path",
    "check_output",
    "check_output_dir",
    "check_outputs",
    "copy_files",
    "is_owned",
    "mark_owned",
]

#: Empty file medimg puts in each output folder it creates; only such folders are ever replaced
#: or deleted as a whole.
OWNER_MARK = ".medimg-output"

_EXISTS = "already exists; pass --overwrite (overwrite=True) to replace it"


def _umask() -> int:
    # os.umask can only be read by setting it; the race is harmless (same value written back)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _apply_umask(path: Path, folder: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have (mkstemp/mkdtemp make 0600/0700)."""
    with contextlib.suppress(OSError):
        os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def _resolved(path: PathType) -> Path:
    return Path(os.path.abspath(Path(path).expanduser()))


def _within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _check_path(path: PathType) -> Path:
    if str(path).strip() == "":
        raise InputError("the output path is empty; name a file or folder to write")
    return Path(path)


def _check_not_input(out: Path, inputs: Iterable[PathType]) -> None:
    target = _resolved(out)
    for given in inputs:
        src = _resolved(given)
        if _within(target, src):
            what = "is" if target == src else "lies inside"
            raise InputError(
                f"{what} the input {given}; writing there would replace or mix with the input, "
                "choose an output outside it",
                out,
            )
        if _within(src, target):
            raise InputError(
                f"holds the input {given}; replacing it would delete the input, choose another "
                "output",
                out,
            )


def _exists(p: Path) -> bool:
    if p.is_symlink() or p.is_file():
        return True
    if p.is_dir():
        return any(p.iterdir())
    return p.exists()  # FIFOs, sockets, devices


def check_output(
    path: PathType, overwrite: bool = False, *, inputs: Iterable[PathType] = ()
) -> Path:
    """Return ``path`` as a Path after making sure writing there loses nothing.

    Raises :class:`OutputExistsError` if the file (or a non-empty folder) exists and
    ``overwrite`` is false, :class:`InputError` if the path is empty or is, lies inside, or
    holds one of ``inputs``. Creates the parent folder.
    """
    p = check_outputs([path], inputs=inputs, overwrite=overwrite)[0]
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def check_outputs(
    outputs: Iterable[PathType], *, inputs: Iterable[PathType] = (), overwrite: bool = False
) -> list[Path]:
    """Validate every output of a verb before it computes anything; writes nothing.

    Each output is refused (one-line :class:`~medimg.errors.MedimgError`) when its path is empty,
    when it is, lies inside or holds an input, when two outputs are the same path, when it exists
    and ``overwrite`` is false, or when its parent exists and is not a folder.
    """
    inputs = [i for i in inputs if str(i).strip()]
    checked: list[Path] = []
    seen: dict[Path, PathType] = {}
    for out in outputs:
        p = _check_path(out)
        key = _resolved(p)
        if key in seen:
            raise InputError(f"is named twice as an output (also as {seen[key]})", p)
        seen[key] = out
        _check_not_input(p, inputs)
        if _exists(p) and not overwrite:
            raise OutputExistsError(_EXISTS, p)
        parent = next((a for a in key.parents if a.exists()), None)
        if parent is not None and not parent.is_dir():
            raise InputError(f"cannot be created: {parent} is a file, not a folder", p)
        checked.append(p)
    return checked


@contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT back for a few renames, so Ctrl-C cannot land between "old aside" and "new
    in"; the interrupt is raised right after. Only the main thread may touch signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


@contextmanager
def _naming(target: Path) -> Iterator[None]:
    """Give OS errors raised while writing ``target`` (full disk, file too large) the name of
    the output they were for; the OS leaves it out for writes to an open file."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror, str(target)) from e
        raise


@contextmanager
def atomic_path(path: PathType, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    An interrupt or error inside the block leaves any existing file untouched. The temporary
    name keeps the final suffixes (``.nii.gz``) so writers that dispatch on extension still work.
    The file ends with the umask's permissions.
    """
    target = check_output(path, overwrite)
    if target.is_dir():
        raise InputError("is a folder; name a file to write", target)
    suffix = "".join(target.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _naming(target):
            yield tmp_path
        _apply_umask(tmp_path)
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def copy_files(
    pairs: Iterable[tuple[PathType, PathType]], *, overwrite: bool = False
) -> list[Path]:
    """Copy ``(source, destination)`` files (a model export) after checking every destination
    first (:func:`check_outputs`; the sources count as inputs); each destination appears whole
    (:func:`atomic_path`), so a refusal or an interrupt never leaves a half-written file.
    Returns the destinations."""
    pairs = [(Path(s), Path(d)) for s, d in pairs]
    dests = check_outputs([d for _, d in pairs], inputs=[s for s, _ in pairs], overwrite=overwrite)
    for (src, _), dest in zip(pairs, dests):
        with atomic_path(dest, overwrite) as tmp:
            shutil.copyfile(src, tmp)
    return dests


def mark_owned(folder: PathType) -> None:
    """Put :data:`OWNER_MARK` into ``folder`` (one medimg created)."""
    (Path(folder) / OWNER_MARK).touch()


def is_owned(folder: PathType, names: Iterable[str] = ()) -> bool:
    """Whether ``folder`` is an output folder medimg created: it holds :data:`OWNER_MARK`, or,
    given the ``names`` a verb writes, nothing but them (its folders from before the mark)."""
    p = Path(folder)
    if (p / OWNER_MARK).is_file():
        return True
    allowed = {*names, OWNER_MARK}
    return len(allowed) > 1 and p.is_dir() and all(q.name in allowed for q in p.iterdir())


def check_output_dir(
    path: PathType,
    overwrite: bool = False,
    *,
    inputs: Iterable[PathType] = (),
    owned: bool | None = None,
) -> Path:
    """The checks :func:`atomic_dir` makes, without writing: call it before the work when the
    folder is written later. Refuses what :func:`check_outputs` refuses, a file in the folder's
    place, and an existing non-empty folder that medimg did not make (``owned``, else the
    :data:`OWNER_MARK`), even with ``overwrite``."""
    target = check_outputs([path], inputs=inputs, overwrite=overwrite)[0]
    if target.exists() and not target.is_dir():
        raise InputError("is a file; name a folder to write", target)
    replacing = target.is_dir() and any(target.iterdir())
    if replacing and not (is_owned(target) if owned is None else owned):
        raise InputError(
            "holds files medimg did not write; --overwrite only replaces an earlier medimg "
            "output, choose a new or empty folder",
            target,
        )
    return target


@contextmanager
def atomic_dir(
    path: PathType,
    overwrite: bool = False,
    *,
    inputs: Iterable[PathType] = (),
    mark: bool = True,
    owned: bool | None = None,
) -> Iterator[Path]:
    """Yield an empty private folder beside ``path``; when the block succeeds it replaces
    ``path`` whole. On an error or interrupt inside the block the private folder is deleted and
    ``path`` is as it was.

    An existing non-empty ``path`` is replaced only with ``overwrite`` and only if medimg made it:
    ``owned`` says so for callers with their own test (a DICOM series of medimg's files);
    otherwise the folder must hold :data:`OWNER_MARK`. ``mark`` puts the mark into the new folder
    (off for folders other programs scan file by file, e.g. DICOM series).
    """
    target = check_output_dir(path, overwrite, inputs=inputs, owned=owned)
    created = [p for p in _resolved(target).parents if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    try:
        _apply_umask(tmp, folder=True)
        if mark:
            mark_owned(tmp)
        with _naming(target):
            yield tmp
        with _interrupts_deferred():
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
                os.replace(target, old / target.name)
                try:
                    os.replace(tmp, target)
                except BaseException:
                    os.replace(old / target.name, target)
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in created:  # innermost first: a failure leaves no empty parents behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
