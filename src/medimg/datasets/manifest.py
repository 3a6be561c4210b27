"""CSV manifests of image files with labels and patient ids, with patient-level splits.

Format: a header row, then one case per row. Columns:

- ``path`` (and ``path2``, ``path3``, ... for further modalities, in channel order): image files
  or DICOM folders, relative to the CSV's folder or absolute. An empty cell is a missing
  modality (allowed only where the caller accepts it, e.g. late-fusion prediction).
- ``label``: a class name or index; for multi-label tasks, names joined by ``;`` (empty = none).
- ``patient_id`` (optional; default: the case id, below): cases of one patient stay together.
- ``split`` (optional): ``train``, ``val`` or ``test``. A patient found in two splits is an
  error (leakage). Without the column, :func:`patient_split` deals patients into train/val.

A case's id (the names of its outputs, what predictions are matched by) is its first file's
name without extension, or, where two rows' files share a name (``A/p01.nii.gz``,
``B/p01.nii.gz``), the path relative to the CSV's folder (``A__p01``); a file listed twice is an
error. The CSV must be UTF-8 text.

Example::

    path,path2,label,patient_id,split
    ct/p01.nii.gz,pet/p01.nii.gz,malignant,p01,train
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from medimg.datasets.splits import kfold_split
from medimg.errors import ImageReadError, InputError
from medimg.io.inputs import case_ids, read_csv_rows
from medimg.typing import PathType

__all__ = ["Manifest", "ManifestRow", "patient_split", "read_manifest"]

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class ManifestRow:
    """One case: a path per modality (``None`` = missing), label indices, patient, split."""

    line: int
    case_id: str
    paths: tuple[Path | None, ...]
    labels: tuple[int, ...]
    patient_id: str
    split: str | None


@dataclass
class Manifest:
    """A checked manifest: its rows and the class names the label indices refer to."""

    path: Path
    classes: list[str]
    multilabel: bool
    rows: list[ManifestRow] = field(default_factory=list)

    @property
    def num_modalities(self) -> int:
        return len(self.rows[0].paths) if self.rows else 0

    def split(self, name: str) -> list[ManifestRow]:
        return [r for r in self.rows if r.split == name]


def _path_columns(header: list[str], where: Path) -> list[str]:
    cols = [c for c in header if c == "path" or (c.startswith("path") and c[4:].isdigit())]
    if "path" not in cols:
        raise InputError("manifest needs a 'path' column (and path2... for more modalities)", where)
    order = sorted(cols, key=lambda c: 1 if c == "path" else int(c[4:]))
    expected = ["path", *[f"path{i}" for i in range(2, len(order) + 1)]]
    if order != expected:
        raise InputError(
            f"path columns must be {', '.join(expected)}, got {', '.join(order)}", where
        )
    return order


def _parse_labels(text: str, classes: list[str], multilabel: bool, where: str) -> tuple[int, ...]:
    names = [t.strip() for t in text.split(";") if t.strip()] if multilabel else [text.strip()]
    out = []
    for name in names:
        if name in classes:
            out.append(classes.index(name))
        elif name.isdigit() and int(name) < len(classes):
            out.append(int(name))
        else:
            raise InputError(
                f"{where}: label {name!r} is not one of the declared classes "
                f"({', '.join(classes)}); fix the row or declare the class"
            )
    return tuple(out)


def read_manifest(
    path: PathType,
    *,
    classes: list[str] | None = None,
    num_modalities: int | None = None,
    multilabel: bool = False,
    allow_missing_modality: bool = False,
    require_labels: bool = True,
    check_files: bool = True,
) -> Manifest:
    """Read and check a manifest (see the module doc); every problem is a one-line error naming
    the CSV line. ``classes`` declares the label names (default: the sorted labels found);
    ``num_modalities`` is what the model expects."""
    where = Path(path)
    if not where.exists():
        raise InputError("manifest not found; check the path", where)
    records = [
        {k.strip(): v for k, v in rec.items() if isinstance(k, str)}  # None: cells past the header
        for rec in read_csv_rows(where)
    ]
    if not records:
        raise InputError("manifest has no rows (only a header); list one case per row", where)
    header = list(records[0])
    cols = _path_columns(header, where)
    if num_modalities is not None and len(cols) != num_modalities:
        raise InputError(
            f"manifest has {len(cols)} image column(s) ({', '.join(cols)}) but the model takes "
            f"{num_modalities} modalities; give one path column per modality",
            where,
        )
    has_label = "label" in header
    if require_labels and not has_label:
        raise InputError("manifest needs a 'label' column", where)
    if classes is None and has_label:
        found = {
            t.strip()
            for r in records
            for t in (r["label"] or "").split(";" if multilabel else "\n")
        }
        classes = sorted(t for t in found if t)
    classes = list(classes or [])
    rows = []
    for n, rec in enumerate(records, start=2):  # line 1 is the header
        line = f"{where.name} line {n}"
        paths: list[Path | None] = []
        for c in cols:
            cell = (rec.get(c) or "").strip()
            if not cell:
                if not allow_missing_modality or c == "path":
                    raise InputError(f"{line}: column {c} is empty; every case needs this modality")
                paths.append(None)
                continue
            p = Path(cell) if Path(cell).is_absolute() else where.parent / cell
            if check_files and not p.exists():
                raise ImageReadError(
                    f"{line}: file {cell} does not exist; fix the path or drop the row", where
                )
            paths.append(p)
        labels = (
            _parse_labels(rec.get("label") or "", classes, multilabel, line) if has_label else ()
        )
        if has_label and not multilabel and len(labels) != 1:
            raise InputError(f"{line}: empty label")
        split = (rec.get("split") or "").strip().lower() or None
        if split is not None and split not in SPLIT_NAMES:
            raise InputError(
                f"{line}: split must be one of {', '.join(SPLIT_NAMES)}, got {split!r}"
            )
        patient = (rec.get("patient_id") or "").strip()  # default: the case id, below
        rows.append(ManifestRow(n, "", tuple(paths), labels, patient, split))
    # the path column is never empty, so every row has a first file
    ids = case_ids([r.paths[0] for r in rows], root=where.parent)  # type: ignore[misc]
    rows = [replace(r, case_id=i, patient_id=r.patient_id or i) for r, i in zip(rows, ids)]
    _check_leakage(rows, where)
    return Manifest(where, classes, multilabel, rows)


def _check_leakage(rows: list[ManifestRow], where: Path) -> None:
    seen: dict[str, tuple[str, int]] = {}
    for r in rows:
        if r.split is None:
            continue
        first = seen.setdefault(r.patient_id, (r.split, r.line))
        if first[0] != r.split:
            raise InputError(
                f"patient {r.patient_id!r} is in split {first[0]} (line {first[1]}) and "
                f"{r.split} (line {r.line}); keep each patient in one split to avoid leakage",
                where,
            )


def patient_split(
    rows: list[ManifestRow], val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[ManifestRow], list[ManifestRow]]:
    """``(train, val)`` for rows without a split column: patients dealt with
    :func:`medimg.datasets.splits.kfold_split` (fold 0 of ``round(1 / val_fraction)``)."""
    if not 0 < val_fraction < 1:
        raise InputError(f"val_fraction must be in (0, 1), got {val_fraction}")
    ids = [f"{r.line}" for r in rows]
    patient = {f"{r.line}": r.patient_id for r in rows}
    k = max(2, round(1 / val_fraction))
    train_ids, val_ids = kfold_split(ids, k, seed=seed, patient_of=patient.__getitem__)[0]
    by_id = {f"{r.line}": r for r in rows}
    return [by_id[i] for i in train_ids], [by_id[i] for i in val_ids]
