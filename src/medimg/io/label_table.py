"""The label table beside a label-map NIfTI: which number is which structure, and its colour.

A NIfTI header has no place for label names, so a label map alone says "1, 2, 3". The table
follows the BIDS derivatives look-up-table convention for discrete segmentations: a
tab-separated file with the image's stem (``case.nii.gz`` -> ``case.tsv``) and the columns
``index``, ``name``, ``color`` (``#rrggbb``). Colours are those the DICOM-SEG gets
(:func:`medimg.io.dicom.codes.structure_code`), so NIfTI and SEG look alike in a viewer.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

from medimg.errors import InputError
from medimg.io.output import atomic_path
from medimg.typing import PathType

__all__ = ["label_table_path", "read_label_table", "write_label_table"]

COLUMNS = ("index", "name", "color")


def label_table_path(image_path: PathType) -> Path:
    """``dir/case.nii.gz`` -> ``dir/case.tsv`` (any image suffix: .nii, .nrrd, .mha...)."""
    p = Path(image_path)
    stem = p.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return p.with_name(f"{stem}.tsv")


def write_label_table(path: PathType, names: Mapping[int, str], *, overwrite: bool = False) -> Path:
    """Write ``names`` (label value -> structure name; 0 = background is added if missing)."""
    from medimg.io.dicom.codes import structure_code

    rows = {0: "background", **{int(k): str(v) for k, v in names.items()}}
    with atomic_path(path, overwrite) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(COLUMNS)
        for value in sorted(rows):
            rgb = (0, 0, 0) if value == 0 else structure_code(rows[value], value).rgb
            w.writerow([value, rows[value], "#{:02x}{:02x}{:02x}".format(*rgb)])
    return Path(path)


def read_label_table(path: PathType) -> dict[int, str]:
    """The label value -> name mapping of a table written by :func:`write_label_table` (or any
    BIDS-style look-up table with ``index`` and ``name`` columns)."""
    p = Path(path)
    try:
        with open(p, newline="") as f:
            reader = csv.DictReader(f, delimiter="\t")
            if not reader.fieldnames or not {"index", "name"} <= set(reader.fieldnames):
                raise InputError("is not a label table: it needs 'index' and 'name' columns", p)
            return {int(r["index"]): r["name"] for r in reader}
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"cannot read the label table ({e})", p) from None
