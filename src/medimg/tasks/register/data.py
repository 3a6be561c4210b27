"""What a registration sample is, where pairs come from, and the training dataset.

Pair lists (:func:`read_pairs`): a Learn2Reg-style ``dataset.json`` (``training_paired_images``,
``registration_val``, ``registration_test``, each entry ``{"fixed", "moving"}`` plus optional
``fixed_label``, ``moving_label``, ``fixed_landmarks``, ``moving_landmarks``, ``field``), a JSON
list of such entries, or a CSV with those column names. Paths are relative to the list's folder.
Landmark files are CSV ``x,y,z`` in RAS+ mm; fields are RAS+ mm vector images on the fixed grid
(``moving(x + u(x)) = fixed(x)``), as :func:`medimg.phantoms.registration.write_pair_dataset`
writes them.

A loaded :class:`Pair` has the moving image (and labels) resampled onto the fixed grid in world
coordinates, so every method sees one grid; :func:`normalise` maps intensities to about [0, 1].
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from medimg.errors import ImageReadError, InputError
from medimg.io.image import Image

__all__ = ["Pair", "PairSpec", "RegDataset", "load_pair", "normalise", "read_pairs", "to_grid"]

_KEYS = ("fixed", "moving", "fixed_label", "moving_label", "fixed_landmarks", "moving_landmarks",
         "field")  # fmt: skip
_SPLITS = {
    "train": "training_paired_images",
    "val": "registration_val",
    "test": "registration_test",
}


@dataclass(frozen=True)
class PairSpec:
    """Paths of one pair (``None`` where absent)."""

    fixed: Path
    moving: Path
    fixed_label: Path | None = None
    moving_label: Path | None = None
    fixed_landmarks: Path | None = None
    moving_landmarks: Path | None = None
    field: Path | None = None

    @property
    def name(self) -> str:
        return self.fixed.name.replace(".nii.gz", "").removesuffix("_0000")


def _spec(entry: dict, base: Path, where: Path) -> PairSpec:
    if not isinstance(entry, dict) or "fixed" not in entry or "moving" not in entry:
        raise InputError(f"each pair needs 'fixed' and 'moving' entries, got {entry!r}", where)
    paths = {}
    for key in _KEYS:
        value = entry.get(key)
        if value in (None, ""):
            continue
        p = (base / str(value)).resolve()
        if not p.exists():
            raise ImageReadError(f"listed as '{key}' in {where.name} but missing", p)
        paths[key] = p
    return PairSpec(**paths)


def read_pairs(source: str | Path, split: str = "train") -> list[PairSpec]:
    """The pairs of ``split`` (``train``/``val``/``test``) in a ``dataset.json`` folder or file, a
    JSON list or a CSV (the last two have no splits: every row is returned)."""
    src = Path(source)
    if src.is_dir():
        src = src / "dataset.json"
    if not src.is_file():
        raise ImageReadError(
            "no pair list here; give a dataset.json (or its folder), .json or .csv", src
        )
    base = src.parent
    if src.suffix.lower() == ".csv":
        from medimg.io.inputs import read_csv_rows

        rows = read_csv_rows(src, required=("fixed", "moving"))
        return [_spec(r, base, src) for r in rows]
    try:
        data = json.loads(src.read_bytes().decode("utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid UTF-8 JSON ({exc})", src) from None
    if isinstance(data, list):
        return [_spec(e, base, src) for e in data]
    if split not in _SPLITS:
        raise InputError(f"split must be train, val or test, got {split!r}")
    if not isinstance(data, dict):
        raise InputError("must hold a list of pairs or a dataset.json object", src)
    entries = data.get(_SPLITS[split], [])
    if not isinstance(entries, list):
        raise InputError(f"'{_SPLITS[split]}' must be a list of pairs", src)
    return [_spec(e, base, src) for e in entries]


@dataclass
class Pair:
    """A loaded pair on the fixed grid; labels ``(1, *S)`` uint8, landmarks ``(N, 3)`` mm,
    ``field`` the true RAS+ mm displacement ``(nd, *S)``."""

    name: str
    fixed: Image
    moving: Image
    fixed_label: Image | None = None
    moving_label: Image | None = None
    fixed_landmarks: np.ndarray | None = None
    moving_landmarks: np.ndarray | None = None
    field: np.ndarray | None = None


def to_grid(image: Image, grid: Image, *, label: bool = False) -> Image:
    """``image`` resampled onto ``grid`` in world coordinates (SimpleITK; identity when the
    geometry already matches). Outside its field of view: 0 (labels) or its minimum."""
    from medimg.io.image import quiet_sitk

    sitk = quiet_sitk()

    same = image.spatial_shape == grid.spatial_shape and np.allclose(
        image.affine, grid.affine, atol=1e-4
    )
    if same:
        return image
    if image.spatial_ndim != grid.spatial_ndim:
        raise InputError(
            f"the moving image is {image.spatial_ndim}D but the fixed image is "
            f"{grid.spatial_ndim}D; register images of the same dimensionality"
        )
    fill = 0.0 if label else float(image.array.min())
    interp = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    out = sitk.Resample(image.to_sitk(), grid.to_sitk(), sitk.Transform(), interp, fill)
    back = Image.from_sitk(out, modality=image.modality, is_label=label)
    return Image(back.array.astype(image.array.dtype), grid.affine.copy(), modality=image.modality,
                 is_label=label)  # fmt: skip


def _read_points(path: Path) -> np.ndarray:
    from medimg.io.inputs import read_csv_rows

    rows = read_csv_rows(path, required=("x", "y"))
    try:
        return np.array([[float(r["x"]), float(r["y"]), float(r.get("z") or 0.0)] for r in rows])
    except (KeyError, ValueError):
        raise InputError("landmarks must be CSV with columns x,y,z (RAS+ mm)", path) from None


def load_pair(spec: PairSpec) -> Pair:
    """Read a pair, check it and put the moving side onto the fixed grid."""
    from medimg.io.api import load

    fixed = load(spec.fixed).check_finite(str(spec.fixed))
    moving = load(spec.moving).check_finite(str(spec.moving))
    from medimg.io.inputs import check_real

    for img, p in ((fixed, spec.fixed), (moving, spec.moving)):
        check_real(img.array, p, what="registration")
        if img.num_channels != 1:
            raise InputError(
                f"registration needs single-channel images, this has {img.num_channels}", p
            )
    if fixed.spatial_ndim != moving.spatial_ndim:
        raise InputError(
            f"fixed is {fixed.spatial_ndim}D but moving is {moving.spatial_ndim}D; register images "
            "of the same dimensionality",
            spec.moving,
        )
    pair = Pair(spec.name, fixed, to_grid(moving, fixed))
    if spec.fixed_label:
        pair.fixed_label = to_grid(load(spec.fixed_label, is_label=True), fixed, label=True)
    if spec.moving_label:
        pair.moving_label = to_grid(load(spec.moving_label, is_label=True), fixed, label=True)
    if spec.fixed_landmarks and spec.moving_landmarks:
        pair.fixed_landmarks = _read_points(spec.fixed_landmarks)
        pair.moving_landmarks = _read_points(spec.moving_landmarks)
    if spec.field:
        field = load(spec.field)
        if field.spatial_shape != fixed.spatial_shape or field.num_channels != fixed.spatial_ndim:
            raise InputError(
                f"the true field must be a {fixed.spatial_ndim}-component image on the fixed grid",
                spec.field,
            )
        pair.field = field.array.astype(np.float32)
    return pair


def normalise(array: np.ndarray) -> np.ndarray:
    """Intensities to about [0, 1]: 0.5th-99.5th percentile window, clipped (any modality).

    The percentiles of a large image come from a regular subsample of about 2^18 voxels (they
    move by far less than the noise; at 96^3 this saves about a tenth of a registration)."""
    a = np.asarray(array, dtype=np.float32)
    stride = max(1, a.size >> 18)
    lo, hi = np.percentile(a.reshape(-1)[::stride], [0.5, 99.5])
    return np.clip((a - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0).astype(np.float32)


class RegDataset(Dataset):
    """Training samples from loaded pairs: ``fixed``/``moving`` normalised ``(1, *S)``, labels,
    and the true field in voxels; randomly flipped along each axis (a flip of the pair negates
    that component of the field), seeded per sample by the engine; with ``crop`` (voxels per
    axis), a random sub-block of that size (displacements in voxels are unchanged by it)."""

    def __init__(self, pairs: list[Pair], *, flip: bool = True, crop: tuple[int, ...] = ()) -> None:
        if not pairs:
            raise InputError("no training pairs")
        shapes = {p.fixed.spatial_shape for p in pairs}
        if len(shapes) > 1:
            raise InputError(f"training pairs must share one grid shape, got {sorted(shapes)}")
        from medimg.tasks.register.transform import to_voxels

        self.flip, self.crop = flip, tuple(crop)
        shape = next(iter(shapes))
        if self.crop and (
            len(self.crop) != len(shape) or any(c > n for c, n in zip(self.crop, shape))
        ):
            raise InputError(f"crop {self.crop} does not fit the pairs' grid {shape}")
        self.items = []
        for p in pairs:
            item = {"fixed": torch.from_numpy(normalise(p.fixed.array)),
                    "moving": torch.from_numpy(normalise(p.moving.array))}  # fmt: skip
            if p.fixed_label is not None and p.moving_label is not None:
                item["fixed_label"] = torch.from_numpy(p.fixed_label.array.astype(np.int64))
                item["moving_label"] = torch.from_numpy(p.moving_label.array.astype(np.int64))
            if p.field is not None:
                item["field"] = to_voxels(p.field, p.fixed.affine)[0]
            self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = dict(self.items[index])
        if self.crop:
            shape = item["fixed"].shape[1:]
            start = [int(torch.randint(0, n - c + 1, ())) for n, c in zip(shape, self.crop)]
            box = (slice(None), *[slice(a, a + c) for a, c in zip(start, self.crop)])
            item = {k: v[box] for k, v in item.items()}
        if not self.flip:
            return item
        for axis in range(item["fixed"].ndim - 1):
            if torch.rand(()) < 0.5:
                item = {k: v.flip(axis + 1) for k, v in item.items()}
                if "field" in item:
                    item["field"] = item["field"].clone()
                    item["field"][axis] *= -1
        return item
