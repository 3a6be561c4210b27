"""``simulate --varied``: varied thorax CTs with typed nodules in the LUNA16 layout.

The same layout as :func:`medimg.datasets.luna16.write_luna16` (``subset<k>/<uid>.mhd``,
``annotations.csv``, ``annotations_excluded.csv``, ``seriesuids.csv``, LPS mm), from
:func:`medimg.phantoms.thorax.thorax_ct_case`, with two additions LUNA16 tools ignore:

* ``annotations.csv`` carries ``nodule_type`` and ``margin`` columns (``evaluate`` reports
  sensitivity per type from them);
* ``hard_negatives.csv`` (``seriesuid,coordX,coordY,coordZ,diameter_mm,kind``): vessel stubs,
  branch points, pleural plaques and fissure points, which training can oversample
  (:class:`medimg.tasks.detect.data.PatchDataset`'s ``hard_negatives``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medimg.datasets.luna16 import _write_mhd, lps_to_ras, write_annotations
from medimg.errors import InputError
from medimg.io.output import atomic_dir
from medimg.typing import PathType

__all__ = ["HARD_NEGATIVE_COLUMNS", "read_hard_negatives", "write_thorax_luna16"]

HARD_NEGATIVE_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "kind")


def write_thorax_luna16(
    root: PathType,
    n_cases: int = 10,
    *,
    seed: int = 0,
    n_subsets: int = 2,
    progress: bool = True,
    overwrite: bool = False,
    **thorax_options,
) -> Path:
    """Write ``n_cases`` varied thorax CTs (seeds ``seed .. seed+n-1``, round-robin into the
    subsets) with the files of the module doc; the folder appears only complete."""
    from pydicom.uid import generate_uid
    from tqdm import tqdm

    from medimg.phantoms.thorax import thorax_ct_case

    if n_cases < 1 or n_subsets < 1:
        raise InputError(f"need n_cases >= 1 and n_subsets >= 1, got {n_cases}, {n_subsets}")
    ann, exc, hard, uids = [], [], [], []
    with atomic_dir(root, overwrite) as out:
        for i in tqdm(range(n_cases), desc="simulate", disable=not progress):
            case = thorax_ct_case(seed + i, **thorax_options)
            uid = generate_uid(entropy_srcs=[f"medimg-thorax-{seed + i}"])
            uids.append([uid])
            path = out / f"subset{i % n_subsets}" / f"{uid}.mhd"
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_mhd(case.image, path)
            for f in case.findings:
                x, y, z = (round(float(v), 3) for v in lps_to_ras(np.asarray(f.center_ras))[0])
                if f.included:
                    ann.append([uid, x, y, z, round(f.diameter_mm, 4), f.kind, f.margin])
                else:
                    exc.append([uid, x, y, z, round(f.diameter_mm, 4)])
            for h in case.hard_negatives:
                x, y, z = (round(float(v), 3) for v in lps_to_ras(np.asarray(h.center_ras))[0])
                hard.append([uid, x, y, z, round(h.diameter_mm, 3), h.kind])
        cols = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "nodule_type", "margin")
        write_annotations(out / "annotations.csv", ann, header=cols)
        write_annotations(out / "annotations_excluded.csv", exc)
        write_annotations(out / "hard_negatives.csv", hard, header=HARD_NEGATIVE_COLUMNS)
        write_annotations(out / "seriesuids.csv", uids, header=None)  # LUNA16: no header
    return Path(root)


def read_hard_negatives(root: PathType) -> dict[str, np.ndarray]:
    """``{uid: (K, 4) [x, y, z, diameter] RAS+ mm}`` from ``root/hard_negatives.csv``; empty
    where the file is absent (plain LUNA16)."""
    from medimg.io.inputs import read_csv_rows

    p = Path(root) / "hard_negatives.csv"
    if not p.is_file():
        return {}
    out: dict[str, list] = {}
    for line, row in enumerate(read_csv_rows(p, required=HARD_NEGATIVE_COLUMNS[:5]), start=2):
        try:
            vals = [float(row[c]) for c in HARD_NEGATIVE_COLUMNS[1:5]]
        except (TypeError, ValueError):
            raise InputError(f"line {line}: coordinates and diameter must be numbers", p) from None
        out.setdefault(row["seriesuid"].strip(), []).append(vals)
    return {u: np.c_[lps_to_ras(np.asarray(v)[:, :3]), np.asarray(v)[:, 3]] for u, v in out.items()}


def read_hard_negative_kinds(root: PathType) -> dict[str, list[str]]:
    """``{uid: [kind per row]}`` of ``root/hard_negatives.csv`` in the order of
    :func:`read_hard_negatives` ("unknown" where a row names none); empty without the file."""
    from medimg.io.inputs import read_csv_rows

    p = Path(root) / "hard_negatives.csv"
    if not p.is_file():
        return {}
    out: dict[str, list[str]] = {}
    for row in read_csv_rows(p, required=HARD_NEGATIVE_COLUMNS[:5]):
        kind = (row.get("kind") or "").strip() or "unknown"
        out.setdefault(row["seriesuid"].strip(), []).append(kind)
    return out
