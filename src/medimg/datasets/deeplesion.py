"""DeepLesion layout: ``DL_info.csv`` plus key-slice PNG folders (universal lesion detection).

The NIH release (Yan et al. 2018) stores each CT series as a folder of 16-bit PNG slices,
``Images_png/<patient>_<study>_<series>/<slice>.png`` (slice numbers 1-based, three digits), in
which a pixel value ``v`` is ``v - 32768`` HU. ``DL_info.csv`` has one row per annotated lesion:

* ``File_name``: ``<patient>_<study>_<series>_<slice>.png``, the key slice;
* ``Key_slice_index``, ``Slice_range`` (``"first, last"``, 1-based, the slices released);
* ``Bounding_boxes``: ``"x1, y1, x2, y2"`` in pixels of the key slice (x = column, y = row);
* ``Lesion_diameters_Pixel_`` (long and short axis), ``Measurement_coordinates`` (RECIST ends);
* ``Spacing_mm_px_``: ``"dx, dy, dz"`` mm (column, row, slice), ``Image_size``, ``DICOM_windows``;
* ``Coarse_lesion_type`` (1 bone, 2 abdomen, 3 mediastinum, 4 liver, 5 lung, 6 kidney, 7 soft
  tissue, 8 pelvis; -1 unknown), ``Possibly_noisy``, ``Train_Val_Test`` (1, 2, 3).

Inside medimg a key slice is a 2D :class:`Image` ``(2k + 1, X, Y)`` whose channels are the slice
and its ``k`` stored neighbours on each side (as 3DCE and MULAN feed them; a neighbour beyond the
released range repeats the nearest one). X is the PNG column, Y the row, so a box
``(x1, y1, x2, y2)`` from the CSV is already in our voxel order. DeepLesion gives no patient
position, so the affine is the pixel spacing on ITK's default orientation. Errors (missing
columns, malformed numbers, boxes outside the slice, missing PNGs) are one-line
:class:`~medimg.errors.InputError`.

Why our own reader: no maintained library reads this layout; it is a CSV and PNGs, read with the
standard library and imageio (a scikit-image dependency).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medimg.errors import InputError
from medimg.io.image import LPS_TO_RAS, Image
from medimg.io.inputs import read_csv_rows
from medimg.io.output import check_output
from medimg.typing import PathType

__all__ = [
    "COLUMNS",
    "HU_OFFSET",
    "LESION_TYPES",
    "DeepLesion",
    "Lesion",
    "open_deeplesion",
    "read_dl_info",
    "write_deeplesion",
]

HU_OFFSET = 32768
LESION_TYPES = {1: "bone", 2: "abdomen", 3: "mediastinum", 4: "liver", 5: "lung", 6: "kidney",
                7: "soft tissue", 8: "pelvis", -1: "unknown"}  # fmt: skip
SPLITS = {1: "train", 2: "val", 3: "test"}
COLUMNS = (
    "File_name", "Patient_index", "Study_index", "Series_ID", "Key_slice_index",
    "Measurement_coordinates", "Bounding_boxes", "Lesion_diameters_Pixel_",
    "Normalized_lesion_location", "Coarse_lesion_type", "Possibly_noisy", "Slice_range",
    "Spacing_mm_px_", "Image_size", "DICOM_windows", "Patient_gender", "Patient_age",
    "Train_Val_Test",
)  # fmt: skip
_REQUIRED = ("File_name", "Key_slice_index", "Bounding_boxes", "Slice_range", "Spacing_mm_px_",
             "Image_size", "Train_Val_Test")  # fmt: skip


@dataclass(frozen=True)
class Lesion:
    """One row of ``DL_info.csv``."""

    file_name: str
    series: str  # "<patient>_<study>_<series>", the PNG folder
    key_slice: int  # 1-based
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in key-slice pixels
    slice_range: tuple[int, int]  # first, last released slice (1-based, inclusive)
    spacing: tuple[float, float, float]  # mm: column, row, slice
    size: tuple[int, int]  # pixels: rows, columns as the CSV gives them
    split: str  # train | val | test
    lesion_type: str = "unknown"
    diameters_px: tuple[float, ...] = ()
    noisy: bool = False

    @property
    def box_mm(self) -> tuple[float, float, float, float]:
        """The box in mm from the slice's corner (DeepLesion has no patient coordinates)."""
        dx, dy = self.spacing[:2]
        x1, y1, x2, y2 = self.box
        return x1 * dx, y1 * dy, x2 * dx, y2 * dy


def _numbers(row: dict[str, str], column: str, n: int | None, where: str) -> list[float]:
    text = (row.get(column) or "").strip()
    try:
        values = [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or (n is not None and len(values) != n):
        want = f"{n} numbers" if n else "numbers"
        raise InputError(f"{where}: {column} is {text!r}, expected {want} separated by commas")
    return values


def _lesion(row: dict[str, str], where: str) -> Lesion:
    name = (row.get("File_name") or "").strip()
    stem = name.removesuffix(".png")
    series, _, slice_text = stem.rpartition("_")
    if not series or not slice_text.isdigit():
        raise InputError(
            f"{where}: File_name {name!r} is not <patient>_<study>_<series>_<slice>.png"
        )
    key = int(_numbers(row, "Key_slice_index", 1, where)[0])
    lo, hi = (int(v) for v in _numbers(row, "Slice_range", 2, where))
    if not lo <= key <= hi:
        raise InputError(f"{where}: key slice {key} lies outside Slice_range {lo}-{hi}")
    x1, y1, x2, y2 = _numbers(row, "Bounding_boxes", 4, where)
    rows, cols = (int(v) for v in _numbers(row, "Image_size", 2, where))
    if not (0 <= x1 < x2 and 0 <= y1 < y2):  # the slice itself is checked when it is read
        raise InputError(f"{where}: box {[x1, y1, x2, y2]} is empty or negative; fix the row "
                         "or drop it")  # fmt: skip
    spacing = _numbers(row, "Spacing_mm_px_", 3, where)
    if min(spacing) <= 0:
        raise InputError(f"{where}: Spacing_mm_px_ {spacing} must be positive")
    split = int(_numbers(row, "Train_Val_Test", 1, where)[0])
    if split not in SPLITS:
        raise InputError(
            f"{where}: Train_Val_Test is {split}, expected 1 (train), 2 (val) or 3 (test)"
        )
    kind = (
        int(_numbers(row, "Coarse_lesion_type", 1, where)[0])
        if row.get("Coarse_lesion_type")
        else -1
    )
    diam = row.get("Lesion_diameters_Pixel_")
    return Lesion(
        file_name=name, series=series, key_slice=key, box=(x1, y1, x2, y2),
        slice_range=(lo, hi), spacing=(spacing[0], spacing[1], spacing[2]), size=(rows, cols),
        split=SPLITS[split], lesion_type=LESION_TYPES.get(kind, "unknown"),
        diameters_px=tuple(_numbers(row, "Lesion_diameters_Pixel_", None, where)) if diam else (),
        noisy=str(row.get("Possibly_noisy", "0")).strip() in ("1", "1.0"),
    )  # fmt: skip


def read_dl_info(path: PathType) -> list[Lesion]:
    """The lesions of a ``DL_info.csv``, in file order; one-line errors name the row."""
    p = Path(path)
    if not p.exists():
        raise InputError("DL_info.csv not found; give the DeepLesion root or its DL_info.csv", p)
    rows = read_csv_rows(p, required=_REQUIRED)  # UTF-8 checked, missing columns named
    lesions = [_lesion(row, f"{p.name} row {i}") for i, row in enumerate(rows, start=2)]
    if not lesions:
        raise InputError("DL_info.csv lists no lesions; nothing to train or evaluate on", p)
    return lesions


def _read_png(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    if not path.is_file():
        raise InputError("slice PNG not found; the Images_png folder is incomplete", path)
    try:
        arr = iio.imread(path)
    except Exception as exc:  # imageio raises many kinds for damaged files
        raise InputError(f"unreadable PNG ({type(exc).__name__}); copy it again", path) from None
    if arr.ndim != 2 or arr.dtype != np.uint16:
        raise InputError(f"expected a 16-bit grey PNG (HU + {HU_OFFSET}), got {arr.dtype} "
                         f"{arr.shape}", path)  # fmt: skip
    return arr


class DeepLesion:
    """A DeepLesion root: ``DL_info.csv`` and ``Images_png/`` (see the module notes)."""

    def __init__(self, root: PathType, lesions: list[Lesion]):
        self.root = Path(root)
        self.lesions = lesions
        images = self.root / "Images_png"
        self.images = images / "Images_png" if (images / "Images_png").is_dir() else images

    def split(self, name: str) -> list[Lesion]:
        """The lesions of the official ``train``, ``val`` or ``test`` split."""
        if name not in SPLITS.values():
            raise InputError(f"split must be one of {', '.join(SPLITS.values())}, got {name!r}")
        return [x for x in self.lesions if x.split == name]

    def key_slices(self) -> dict[tuple[str, int], list[Lesion]]:
        """Lesions grouped by ``(series, key slice)``: one detection sample each."""
        out: dict[tuple[str, int], list[Lesion]] = {}
        for x in self.lesions:
            out.setdefault((x.series, x.key_slice), []).append(x)
        return out

    def load(self, lesion: Lesion, neighbours: int = 1) -> Image:
        """The key slice and ``neighbours`` slices either side as channels, in HU."""
        if neighbours < 0:
            raise InputError(f"neighbours must be >= 0, got {neighbours}")
        lo, hi = lesion.slice_range
        folder = self.images / lesion.series
        planes = []
        for k in range(lesion.key_slice - neighbours, lesion.key_slice + neighbours + 1):
            k = min(max(k, lo), hi)  # beyond the released range: repeat the edge slice
            png = _read_png(folder / f"{k:03d}.png")
            if sorted(png.shape) != sorted(lesion.size):
                raise InputError(f"slice is {png.shape[1]}x{png.shape[0]} but DL_info.csv says "
                                 f"{lesion.size[1]}x{lesion.size[0]}", folder / f"{k:03d}.png")  # fmt: skip
            x2, y2 = lesion.box[2:]
            if x2 > png.shape[1] or y2 > png.shape[0]:
                raise InputError(f"{lesion.file_name}: box {list(lesion.box)} reaches outside the "
                                 f"{png.shape[1]}x{png.shape[0]} slice; fix the row", folder)  # fmt: skip
            planes.append(png.T.astype(np.float32) - HU_OFFSET)  # (X = column, Y = row)
        dx, dy, _ = lesion.spacing
        affine = LPS_TO_RAS @ np.diag([dx, dy, 1.0, 1.0])
        meta = {"source": str(folder), "series": lesion.series, "key_slice": lesion.key_slice,
                "slice_spacing_mm": lesion.spacing[2], "neighbours": neighbours}  # fmt: skip
        return Image(np.stack(planes), affine, modality="CT", meta=meta)


def open_deeplesion(root: PathType) -> DeepLesion:
    """Read and check a DeepLesion root (``DL_info.csv`` + ``Images_png``)."""
    p = Path(root)
    csv_path = p if p.is_file() else p / "DL_info.csv"
    lesions = read_dl_info(csv_path)
    data = DeepLesion(csv_path.parent, lesions)
    if not data.images.is_dir():
        raise InputError("no Images_png folder next to DL_info.csv; unpack the image zips there",
                         csv_path.parent)  # fmt: skip
    return data


def write_deeplesion(
    root: PathType,
    series: dict[str, tuple[np.ndarray, tuple[float, float, float]]],
    lesions: list[dict],
    *,
    overwrite: bool = False,
) -> Path:
    """Write volumes and lesions in the DeepLesion layout (tests, synthetic sets).

    ``series``: ``{"000001_01_01": (hu (X, Y, Z), (dx, dy, dz) mm)}``, slices written as
    ``001.png`` ... ; ``lesions``: dicts with ``series``, ``key_slice`` (1-based), ``box``
    ``(x1, y1, x2, y2)`` and optional ``split`` (1/2/3) and ``type`` (1-8).
    """
    import imageio.v3 as iio

    out = Path(root)
    check_output(out / "DL_info.csv", overwrite=overwrite)
    for name, (hu, _) in series.items():
        folder = out / "Images_png" / name
        folder.mkdir(parents=True, exist_ok=True)
        stored = np.clip(np.round(np.asarray(hu) + HU_OFFSET), 0, 65535).astype(np.uint16)
        for k in range(stored.shape[2]):
            iio.imwrite(folder / f"{k + 1:03d}.png", np.ascontiguousarray(stored[:, :, k].T))
    with (out / "DL_info.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for x in lesions:
            hu, spacing = series[x["series"]]
            pat, study, ser = x["series"].split("_")
            x1, y1, x2, y2 = x["box"]
            n = hu.shape[2]
            w.writerow([
                f"{x['series']}_{x['key_slice']:03d}.png", int(pat), int(study), int(ser),
                x["key_slice"], "", f"{x1}, {y1}, {x2}, {y2}", f"{x2 - x1}, {y2 - y1}", "",
                x.get("type", -1), 0, f"1, {n}", ", ".join(str(s) for s in spacing),
                f"{hu.shape[1]}, {hu.shape[0]}", "-175, 275", "", "", x.get("split", 1),
            ])  # fmt: skip
    return out
