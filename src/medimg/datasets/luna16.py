"""LUNA16 layout: ``subset<k>/<seriesuid>.mhd`` (+ ``.raw``) volumes and CSV ground truth.

Files at the root (all world coordinates are the MetaImage's, i.e. **LPS** mm, as ITK writes):

* ``annotations.csv``: ``seriesuid,coordX,coordY,coordZ,diameter_mm`` (the included nodules);
* ``annotations_excluded.csv`` (optional, same columns): findings whose hits count neither as TP
  nor as FP; ``diameter_mm`` may be -1 (then 10 mm, as the LUNA16 script);
* ``candidates.csv`` (optional): ``seriesuid,coordX,coordY,coordZ,class`` (1 = nodule);
* ``seriesuids.csv`` (optional): the scans to evaluate, one uid a line.

Inside medimg centres are RAS+ (``x_ras = -coordX``, ``y_ras = -coordY``, ``z = coordZ``).
:func:`write_luna16` writes synthetic cases (:func:`medimg.phantoms.detection.nodule_ct_case`)
in this layout; :func:`open_luna16` reads and checks it: unknown series, an empty or malformed
annotations file and centres outside their volume are one-line :class:`InputError`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medimg.errors import InputError
from medimg.io.image import Image
from medimg.io.inputs import check_allocation, read_csv_rows
from medimg.io.output import atomic_dir, check_output
from medimg.typing import PathType

__all__ = [
    "ANNOTATION_COLUMNS",
    "Luna16",
    "lps_to_ras",
    "open_luna16",
    "read_annotations",
    "write_annotations",
    "write_luna16",
]

ANNOTATION_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")
_FLIP = np.array([-1.0, -1.0, 1.0])


def lps_to_ras(points: np.ndarray) -> np.ndarray:
    """LPS <-> RAS+ for ``(N, 3)`` points (its own inverse)."""
    return np.asarray(points, dtype=np.float64).reshape(-1, 3) * _FLIP


def read_annotations(path: PathType, *, allow_empty: bool = False) -> dict[str, np.ndarray]:
    """``{seriesuid: (N, 4) [x, y, z, diameter] LPS mm}`` from a LUNA16 annotations CSV (UTF-8;
    every problem a one-line :class:`InputError` naming the file and line)."""
    p = Path(path)
    if not p.exists():
        raise InputError("annotations file not found; give the LUNA16 annotations.csv", p)
    out: dict[str, list[list[float]]] = {}
    for line, row in enumerate(read_csv_rows(p, required=ANNOTATION_COLUMNS), start=2):
        try:
            vals = [float(row[c]) for c in ANNOTATION_COLUMNS[1:]]
        except (TypeError, ValueError):
            raise InputError(f"line {line}: coordinates and diameter must be numbers", p) from None
        if not np.all(np.isfinite(vals)):
            raise InputError(f"line {line}: coordinates and diameter must be finite", p)
        uid = (row["seriesuid"] or "").strip()
        if not uid:
            raise InputError(f"line {line}: seriesuid is empty", p)
        out.setdefault(uid, []).append(vals)
    if not out and not allow_empty:
        raise InputError("has no annotations (only a header); FROC needs at least one nodule", p)
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def write_annotations(
    path: PathType,
    rows: list,
    *,
    header: tuple | None = ANNOTATION_COLUMNS,
    overwrite: bool = False,
) -> Path:
    """Write LUNA16 CSV rows (refuses to replace an existing file unless ``overwrite``)."""
    p = check_output(path, overwrite)
    with p.open("w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return p


@dataclass
class Luna16:
    """An opened LUNA16 folder: series paths, subsets and ground truth (LPS mm rows)."""

    root: Path
    series: dict[str, Path]
    annotations: dict[str, np.ndarray]
    excluded: dict[str, np.ndarray] = field(default_factory=dict)
    subsets: dict[str, str] = field(default_factory=dict)

    def uids(self, subsets: list[str] | None = None) -> list[str]:
        """Sorted series uids, optionally only those in the named subset folders."""
        return sorted(u for u in self.series if subsets is None or self.subsets[u] in subsets)

    def load(self, uid: str) -> tuple[Image, np.ndarray, np.ndarray]:
        """``(image, nodules (N, 4), excluded (E, 4))``, rows ``[x, y, z, diameter]`` in RAS+ mm;
        a centre outside the volume raises :class:`InputError`."""
        from medimg.io.api import load

        if uid not in self.series:
            raise InputError(f"no volume {uid}.mhd under {self.root}")
        image = load(self.series[uid], modality="CT")
        rows = []
        for name, table in (("annotations.csv", self.annotations), ("excluded", self.excluded)):
            r = table.get(uid, np.zeros((0, 4)))
            ras = np.c_[lps_to_ras(r[:, :3]), r[:, 3]]
            vox = image.world_to_voxel(ras[:, :3]) if len(r) else np.zeros((0, 3))
            shape = np.asarray(image.spatial_shape)
            bad = np.flatnonzero(np.any((vox < -0.5) | (vox > shape - 0.5), axis=1))
            if bad.size:
                raise InputError(
                    f"{name}: the finding at {r[bad[0], :3].round(2).tolist()} (LPS mm) lies outside "
                    f"series {uid} (shape {tuple(shape)}); check coordX/Y/Z are world LPS mm"
                )
            rows.append(ras)
        return image, rows[0], rows[1]


def open_luna16(root: PathType, *, allow_empty: bool = False) -> Luna16:
    """Read a LUNA16 folder and check that every annotation names a volume that is there."""
    r = Path(root)
    if not r.is_dir():
        raise InputError("not a folder; give the LUNA16 root (annotations.csv, subset*/)", r)
    series = {p.stem: p for p in sorted(r.rglob("*.mhd"))}
    if not series:
        raise InputError("no .mhd volumes found (expected subset*/<seriesuid>.mhd)", r)
    ann = read_annotations(r / "annotations.csv", allow_empty=allow_empty)
    exc_path = r / "annotations_excluded.csv"
    exc = read_annotations(exc_path, allow_empty=True) if exc_path.is_file() else {}
    for name, table in (("annotations.csv", ann), ("annotations_excluded.csv", exc)):
        unknown = sorted(set(table) - set(series))
        if unknown:
            raise InputError(
                f"{name} refers to {len(unknown)} series without a volume here (first: "
                f"{unknown[0]}); add its .mhd/.raw or remove its rows",
                r,
            )
    subsets = {u: p.parent.name for u, p in series.items()}
    return Luna16(r, series, ann, exc, subsets)


def _write_mhd(image: Image, path: Path) -> None:
    """Uncompressed ``.mhd`` + ``.raw`` int16 as LUNA16 ships them (``medimg.io.save`` writes
    zlib-compressed ``.zraw``)."""
    import SimpleITK as sitk

    check_output(path)
    arr = np.clip(np.rint(image.array), -32768, 32767).astype(np.int16)
    img = Image(arr, image.affine, modality="CT").to_sitk()
    sitk.WriteImage(img, str(path), useCompression=False)


def write_luna16(
    root: PathType,
    n_cases: int = 10,
    *,
    seed: int = 0,
    n_subsets: int = 2,
    progress: bool = True,
    overwrite: bool = False,
    **case_options,
) -> Path:
    """Write ``n_cases`` synthetic chest CTs (seeds ``seed .. seed+n-1``) dealt round-robin into
    ``subset0..subset{n_subsets-1}``, with annotations, excluded findings, candidates (nodule
    centres plus random lung points) and ``seriesuids.csv``. Refuses a non-empty ``root``
    (``overwrite`` replaces an earlier simulated set); the folder appears only complete."""
    if n_cases < 1 or n_subsets < 1:
        raise InputError(f"need n_cases >= 1 and n_subsets >= 1, got {n_cases}, {n_subsets}")
    if "shape" in case_options:  # the phantom holds a few float64 working copies
        check_allocation(case_options["shape"], np.float64, copies=6, what="the simulated CT")  # type: ignore[arg-type]
    with atomic_dir(root, overwrite) as out:  # appears complete or not at all
        _write_cases(out, n_cases, seed, n_subsets, progress, case_options)
    return Path(root)


def _write_cases(
    out: Path, n_cases: int, seed: int, n_subsets: int, progress: bool, case_options: dict
) -> None:
    from pydicom.uid import generate_uid
    from tqdm import tqdm

    from medimg.phantoms.detection import nodule_ct_case

    ann, exc, cand, uids = [], [], [], []
    for i in tqdm(range(n_cases), desc="simulate", disable=not progress):
        s = seed + i
        case = nodule_ct_case(s, **case_options)
        uid = generate_uid(entropy_srcs=[f"medimg-luna16-{s}"])
        uids.append([uid])
        path = out / f"subset{i % n_subsets}" / f"{uid}.mhd"
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_mhd(case.image, path)
        for f in case.findings:
            x, y, z = lps_to_ras(np.asarray(f.center_ras))[0]
            (ann if f.included else exc).append([uid, x, y, z, round(f.diameter_mm, 4)])
            cand.append([uid, x, y, z, int(f.included)])
        rng = np.random.default_rng([s, 99])
        lung = np.argwhere(case.image.array[0] < -600)
        for v in lung[rng.integers(len(lung), size=20)] if len(lung) else []:
            x, y, z = lps_to_ras(case.image.voxel_to_world(v))[0]
            cand.append([uid, round(x, 3), round(y, 3), round(z, 3), 0])
    write_annotations(out / "annotations.csv", ann)
    write_annotations(out / "annotations_excluded.csv", exc)
    cols = ("seriesuid", "coordX", "coordY", "coordZ", "class")
    write_annotations(out / "candidates.csv", cand, header=cols)
    write_annotations(out / "seriesuids.csv", uids, header=None)  # LUNA16: no header
