"""MedMNIST ``.npz`` files (v2 and MedMNIST+ sizes) with their official splits.

Layout (as distributed): one ``<name>[_<size>].npz`` per dataset holding ``train_images``,
``train_labels``, ``val_images``, ``val_labels``, ``test_images``, ``test_labels``. Images are
uint8: 2D ``(N, H, W)`` or RGB ``(N, H, W, 3)``, 3D ``(N, D, H, W)``. Labels are ``(N, 1)`` class
indices, or ``(N, K)`` 0/1 for the multi-label ChestMNIST.

:func:`load_medmnist` returns float32 images in [0, 1] in our channel-first layout
``(N, C, X, Y[, Z])`` (columns become ``X``, rows ``Y``; 3D ``(D, H, W)`` becomes
``(W, H, D)``) and labels ``(N,)`` (binary/multi-class) or ``(N, K)`` (multi-label).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medimg.errors import ImageReadError, InputError
from medimg.io.inputs import check_real
from medimg.typing import PathType

__all__ = ["KNOWN_TASKS", "MedMNIST", "load_medmnist"]

SPLITS = ("train", "val", "test")

#: Task type and class count of the published MedMNIST v2 datasets (Yang et al. 2023).
KNOWN_TASKS: dict[str, tuple[str, int]] = {
    "pathmnist": ("multiclass", 9), "chestmnist": ("multilabel", 14),
    "dermamnist": ("multiclass", 7), "octmnist": ("multiclass", 4),
    "pneumoniamnist": ("binary", 2), "retinamnist": ("multiclass", 5),
    "breastmnist": ("binary", 2), "bloodmnist": ("multiclass", 8),
    "tissuemnist": ("multiclass", 8), "organamnist": ("multiclass", 11),
    "organcmnist": ("multiclass", 11), "organsmnist": ("multiclass", 11),
    "organmnist3d": ("multiclass", 11), "nodulemnist3d": ("binary", 2),
    "adrenalmnist3d": ("binary", 2), "fracturemnist3d": ("multiclass", 3),
    "vesselmnist3d": ("binary", 2), "synapsemnist3d": ("binary", 2),
}  # fmt: skip


@dataclass
class MedMNIST:
    """A loaded MedMNIST file: ``splits[name] = (images, labels)`` for train/val/test."""

    name: str
    task: str  # binary | multiclass | multilabel
    num_classes: int
    spatial_dims: int
    splits: dict[str, tuple[np.ndarray, np.ndarray]]

    @property
    def channels(self) -> int:
        return int(self.splits["train"][0].shape[1])


def _dataset_name(path: Path) -> str:
    return re.sub(r"_\d+$", "", path.name.removesuffix(".npz")).lower()


def _to_channel_first(images: np.ndarray, key: str, path: Path) -> tuple[np.ndarray, int]:
    if images.ndim == 3:  # (N, H, W)
        return images.transpose(0, 2, 1)[:, None], 2
    if images.ndim == 4 and images.shape[-1] == 3 and images.shape[1] != 3:  # RGB (N, H, W, 3)
        return images.transpose(0, 3, 2, 1), 2
    if images.ndim == 4:  # (N, D, H, W)
        return images.transpose(0, 3, 2, 1)[:, None], 3
    raise ImageReadError(
        f"{key} has shape {images.shape}; expected (N, H, W), (N, H, W, 3) or (N, D, H, W)", path
    )


def _check_images(images: np.ndarray, key: str, path: Path) -> None:
    """Real, finite numbers: complex values would lose their imaginary part in the float32
    copy, NaN would poison training."""
    check_real(images, path, what=f"a MedMNIST image array ({key})")
    if images.dtype.kind not in "biuf":
        raise ImageReadError(f"{key} holds {images.dtype} values, not pixel numbers", path)
    if images.dtype.kind == "f" and not np.isfinite(images).all():
        raise ImageReadError(f"{key} holds NaN or infinite pixels; fix the file", path)


def load_medmnist(path: PathType, task: str | None = None) -> MedMNIST:
    """Read a MedMNIST ``.npz``; ``task`` overrides the type known for its name (or inferred
    from the labels: several columns = multi-label, two values = binary, else multi-class)."""
    p = Path(path)
    if not p.is_file():
        raise ImageReadError("MedMNIST file not found; check the path", p)
    try:
        data = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ImageReadError(f"not a readable .npz file ({exc})", p) from None
    with data:
        missing = [
            f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in data
        ]
        if missing:
            raise ImageReadError(
                f"missing arrays {', '.join(missing)} (has {', '.join(data.files) or 'none'}); "
                "a MedMNIST file holds train/val/test _images and _labels",
                p,
            )
        raw = {s: (data[f"{s}_images"], data[f"{s}_labels"]) for s in SPLITS}
    name = _dataset_name(p)
    splits, dims = {}, set()
    for s, (images, labels) in raw.items():
        if len(images) != len(labels):
            raise ImageReadError(f"{s}: {len(images)} images but {len(labels)} labels", p)
        _check_images(images, f"{s}_images", p)
        scale = 255.0 if images.dtype == np.uint8 else 1.0
        arr, d = _to_channel_first(images, f"{s}_images", p)
        dims.add(d)
        if len(images) == 0 and s == "train":
            raise ImageReadError("train_images is empty; nothing to train on", p)
        width = labels.shape[1] if labels.ndim == 2 else 1  # reshape(0, -1) is ambiguous
        lab = labels.reshape(len(labels), -1 if len(labels) else width).astype(np.int64)
        splits[s] = (np.ascontiguousarray(arr, dtype=np.float32) / scale, lab)
    if len(dims) != 1:
        raise ImageReadError("splits differ in dimensionality", p)
    shapes = {v[0].shape[1:] for v in splits.values() if len(v[0])}
    if len(shapes) != 1:
        raise ImageReadError(f"splits differ in image shape: {sorted(shapes)}", p)
    if min(shapes.pop()[1:]) < 2:
        raise ImageReadError("images of one pixel per side cannot be classified", p)
    width = {v[1].shape[1] for v in splits.values()}
    if len(width) != 1:
        raise ImageReadError(f"label columns differ between splits: {sorted(width)}", p)
    known = KNOWN_TASKS.get(name)
    all_labels = np.concatenate([v[1] for v in splits.values()])
    if task is None:
        if known:
            task = known[0]
        elif all_labels.shape[1] > 1:
            task = "multilabel"
        else:
            task = "binary" if all_labels.max() <= 1 else "multiclass"
    if task not in ("binary", "multiclass", "multilabel"):
        raise InputError(f"task must be binary, multiclass or multilabel, got {task!r}")
    if task == "multilabel":
        k = all_labels.shape[1]
        if not np.isin(all_labels, (0, 1)).all():
            raise ImageReadError("multi-label labels must be 0/1", p)
    else:
        if all_labels.shape[1] != 1:
            raise ImageReadError(f"{task} labels need one column, got {all_labels.shape[1]}", p)
        k = known[1] if known else int(all_labels.max()) + 1
        k = max(k, 2)
        bad = all_labels[(all_labels < 0) | (all_labels >= k)]
        if bad.size:
            raise ImageReadError(f"label {int(bad[0])} outside the {k} classes 0..{k - 1}", p)
        splits = {s: (x, y[:, 0]) for s, (x, y) in splits.items()}
    return MedMNIST(name, task, int(k), dims.pop(), splits)
