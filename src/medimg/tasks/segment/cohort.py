"""Segmentation over a cohort (``medimg segment predict MANIFEST.csv|DIR OUT --workers N``).

:func:`predict_case` is the per-case runner of :mod:`medimg.engine.cohort`: each worker process
loads the model once, then writes each study's labels (NIfTI + label table, and a DICOM-SEG for a
DICOM series) into the study's own folder, whole, through the one-process ``predict_path``. A cohort study is one image file or one DICOM series folder (the shipped models
take one channel).
"""

from __future__ import annotations

import functools
from pathlib import Path

from medimg.errors import InputError
from medimg.tasks.segment.predict import Segmenter, _inputs, predict_path
from medimg.typing import PathType

__all__ = ["find_cases", "predict_case"]


@functools.lru_cache(maxsize=2)
def _segmenter(model, device: str, overlap: float, batch_size: int, backend: str) -> Segmenter:
    return Segmenter(model, device=device, overlap=overlap, batch_size=batch_size, backend=backend)


def find_cases(source: PathType) -> list[tuple[str, Path]]:
    """``[(case id, file or DICOM folder)]`` of a file or folder, as ``predict`` groups them."""
    items = _inputs(Path(source))
    multi = [name for name, files, _ in items if len(files) > 1]
    if multi:
        raise InputError(f"case {multi[0]!r} has several channel files; a cohort run takes one "
                         "file or DICOM series per study", source)  # fmt: skip
    return [(name, files[0]) for name, files, _ in items]


def predict_case(
    case_path: str,
    case_dir: Path,
    *,
    model: str | None = None,
    device: str = "cpu",
    mirror: bool = True,
    force: bool = False,
    overlap: float = 0.5,
    batch_size: int = 2,
    backend: str = "torch",
    prior: str = "off",
) -> dict:
    """Segment one study into ``case_dir`` (written whole); returns the record's extra fields."""
    notes: list[str] = []
    written = predict_path(case_path, case_dir, mirror=mirror, progress=False, notes=notes,
                           force=force, segmenter=_segmenter(model, device, overlap, batch_size,
                                                             backend), prior=prior)  # fmt: skip
    return {"files": len(written), **({"note": notes[0]} if notes else {})}
