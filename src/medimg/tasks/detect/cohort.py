"""Nodule detection over a cohort (``medimg detect predict MANIFEST.csv|DIR OUT --workers N``).

:func:`predict_case` is the per-case runner of :mod:`medimg.engine.cohort`: each worker process
loads the detector once and reuses it. :func:`merge_candidates` joins the cases' tables into one
LUNA16 ``candidates.csv`` at the top of the cohort folder, as a one-process run writes it.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

from medimg.io.output import atomic_path
from medimg.tasks.detect.predict import Detector, predict_path
from medimg.typing import PathType

__all__ = ["merge_candidates", "predict_case"]


@functools.lru_cache(maxsize=2)
def _detector(model: str | None, device: str, flips: bool, backend: str = "torch") -> Detector:
    return Detector(model, device, flips, backend=backend)


def predict_case(
    case_path: str,
    case_dir: Path,
    *,
    model: str | None = None,
    device: str = "cpu",
    flips: bool = False,
    figures: bool = True,
    backend: str = "torch",
) -> dict:
    """Detect nodules in one study into ``case_dir`` (written whole); returns the record's
    extra fields (the number of candidates)."""
    written = predict_path(case_path, case_dir, model=model, device=device, flips=flips,
                           figures=figures,
                           detector=_detector(model, device, flips, backend))  # fmt: skip
    with open(written[0]) as f:
        n = sum(1 for _ in f) - 1
    return {"candidates": n}


def merge_candidates(out_dir: PathType, case_ids: list[str]) -> Path:
    """``out_dir/candidates.csv``: the rows of every listed case that finished, in case order."""
    out = Path(out_dir)
    header, rows = "seriesuid,coordX,coordY,coordZ,probability,diameter_mm", []
    for cid in case_ids:
        table = out / "cases" / cid / "candidates.csv"
        if table.exists():
            with open(table, newline="") as f:
                rows += [",".join(r) for r in list(csv.reader(f))[1:]]
    with atomic_path(out / "candidates.csv", overwrite=True) as tmp:
        tmp.write_text("\n".join([header, *rows]) + "\n")
    return out / "candidates.csv"
