"""What a diagnosis sample is, and where samples come from (phantoms, manifests, MedMNIST).

A sample is the channel-first array ``x`` ``(M * C, X, Y[, Z])`` at the model's input size with
its modalities stacked, a ``present`` mask ``(M,)``, and a target: a float 0/1 (binary), a class
index (multi-class) or a 0/1 vector (multi-label). :class:`CaseArrays` holds a set of them.

Intensities are mapped to about [0, 1] per modality: a fixed window when the modality has
physical units (CT in HU, PET in SUV), else the image's 1st-99th percentiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from medimg.errors import InputError
from medimg.io.image import Image
from medimg.io.inputs import check_real

__all__ = [
    "LUMA",
    "CaseArrays",
    "PairedSemiDataset",
    "SampleDataset",
    "check_case_image",
    "from_phantoms",
    "load_case_images",
    "prepare_image",
]

#: Default intensity windows by modality code: physical units map the same way in every image.
WINDOWS: dict[str, tuple[float, float]] = {"CT": (-1000.0, 400.0), "PT": (0.0, 8.0)}


def normalise(array: np.ndarray, window: Sequence[float] | None) -> np.ndarray:
    """Map intensities to about [0, 1]: ``window`` ``(lo, hi)``, else 1st-99th percentiles."""
    a = np.asarray(array, dtype=np.float32)
    if window is None:
        lo, hi = np.percentile(a, [1.0, 99.0])
    else:
        lo, hi = float(window[0]), float(window[1])
    return np.clip((a - lo) / max(hi - lo, 1e-6), -0.5, 1.5).astype(np.float32)


def resize(array: np.ndarray, size: Sequence[int], order: int = 1) -> np.ndarray:
    """Resample ``(C, *spatial)`` to ``(C, *size)`` (linear; identity when sizes match)."""
    if tuple(array.shape[1:]) == tuple(size):
        return array
    zoom = [1.0] + [s / n for s, n in zip(size, array.shape[1:])]
    return ndimage.zoom(array, zoom, order=order, grid_mode=True, mode="nearest")


def prepare_image(image: Image, size: Sequence[int], window: Sequence[float] | None) -> np.ndarray:
    """An :class:`Image` as model input ``(C, *size)``: normalised, then resized."""
    if image.spatial_ndim != len(size):
        raise InputError(
            f"the model takes {len(size)}D images, got a {image.spatial_ndim}D image of shape "
            f"{image.spatial_shape}; pass {len(size)}D files"
        )
    return resize(normalise(image.array, window), size)


@dataclass
class CaseArrays:
    """Samples of one split: ``x`` ``(N, M*C, ...)``, ``y``, ``present`` ``(N, M)``, ids, and
    the phantom ground truth for explanation checks (boxes, per-slice labels) when known."""

    x: np.ndarray
    y: np.ndarray
    present: np.ndarray
    case_ids: list[str]
    boxes: list[list[tuple[int, ...]]] = field(default_factory=list)
    instance_labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, idx: Sequence[int] | np.ndarray) -> CaseArrays:
        idx = np.asarray(idx, dtype=np.int64)
        return CaseArrays(self.x[idx], self.y[idx], self.present[idx],
                          [self.case_ids[i] for i in idx],
                          [self.boxes[i] for i in idx] if self.boxes else [],
                          None if self.instance_labels is None else self.instance_labels[idx])  # fmt: skip

    def select_modalities(self, keep: Sequence[int], channels: int = 1) -> CaseArrays:
        """The same cases with only modalities ``keep`` (for single-modality baselines)."""
        ch = [m * channels + c for m in keep for c in range(channels)]
        return CaseArrays(self.x[:, ch], self.y, self.present[:, list(keep)], self.case_ids,
                          self.boxes, self.instance_labels)  # fmt: skip


def from_phantoms(
    cases: Sequence, windows: Sequence[Sequence[float] | None] | None = None, prefix: str = "case"
) -> CaseArrays:
    """Arrays of :class:`~medimg.phantoms.diagnosis.DiagnosisCase` objects at their own size."""
    if not cases:
        raise InputError("no cases")
    mods = list(cases[0].images)
    windows = windows or [WINDOWS.get(m) for m in mods]
    x = np.stack([np.stack([normalise(c.images[m], w) for m, w in zip(mods, windows)])
                  for c in cases])  # fmt: skip
    y = np.array([c.label for c in cases], np.float32)
    inst = None
    if cases[0].instance_labels is not None:
        inst = np.stack([c.instance_labels for c in cases])
    return CaseArrays(x, y, np.ones((len(cases), len(mods)), bool),
                      [f"{prefix}{i:04d}" for i in range(len(cases))],
                      [list(c.boxes) for c in cases], inst)  # fmt: skip


#: ITU-R BT.601 luma weights: how an RGB(A) image becomes the one channel a grey model takes.
LUMA = (0.299, 0.587, 0.114)


def check_case_image(image: Image, path: object = None, channels: int | None = None) -> Image:
    """``image`` as a diagnosis model can take it, or a one-line refusal naming ``path``.

    Refused: complex or non-numeric values, NaN/Inf, a side of one pixel (a 1-voxel or line
    image), more than 3 spatial axes. A single-slice volume ``(X, Y, 1)`` is kept (the model
    reads it as the 2D image it is). When the model takes one channel and the image is RGB or
    RGBA (3 or 4 channels, e.g. a radiograph saved as a colour file), it is converted to grey
    with the BT.601 luma weights :data:`LUMA` (alpha ignored); other channel counts are
    refused."""
    where = None if path is None else str(path)
    check_real(image.array, where, what="diagnosis")
    if image.array.dtype.kind not in "biuf":
        raise InputError(
            f"holds {image.array.dtype} values, not numbers; convert it to a grey image", where
        )
    shape = image.spatial_shape
    core = shape[:-1] if len(shape) == 3 and shape[-1] == 1 else shape
    if min(core, default=0) < 2 or len(shape) > 3:
        raise InputError(
            f"is {'x'.join(map(str, shape))} voxels, too small or of too many axes to diagnose; "
            "give a 2D image or 3D volume at least 2 pixels on each side",
            where,
        )
    if not np.isfinite(image.array).all():
        raise InputError("holds NaN or infinite values; fix or mask them before diagnosis", where)
    if channels is not None and image.num_channels != channels:
        if channels == 1 and image.num_channels in (3, 4):
            grey = np.tensordot(np.asarray(LUMA, np.float32), image.array[:3], axes=1)
            return Image(grey[None].astype(np.float32), image.affine, modality=image.modality,
                         meta=image.meta)  # fmt: skip
        raise InputError(
            f"has {image.num_channels} channels but the model takes {channels}; give "
            f"{channels}-channel images",
            where,
        )
    return image


def _monochrome1_bits(path: object) -> int | None:
    """``BitsStored`` when ``path`` (a DICOM file, or a folder's first file) is MONOCHROME1,
    else ``None``. The DICOM reader keeps stored values as they are; for MONOCHROME1 (most CR
    films) the lowest value is white, the inverse of the dense = bright the models take."""
    import pydicom

    p = Path(str(path))
    if p.is_dir():
        p = next((f for f in sorted(p.iterdir()) if f.is_file() and not f.name.startswith(".")),
                 p)  # fmt: skip
    if not p.is_file() or p.name.lower().endswith((".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")):
        return None
    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True,
                             specific_tags=["PhotometricInterpretation", "BitsStored"])  # fmt: skip
    except Exception:  # not DICOM: nothing to convert
        return None
    if ds.get("PhotometricInterpretation") != "MONOCHROME1":
        return None
    return int(ds.get("BitsStored") or 16)


def _as_monochrome2(image: Image, path: object) -> Image:
    """``image`` with MONOCHROME1 values inverted (:func:`_monochrome1_bits`)."""
    bits = _monochrome1_bits(path)
    if bits is None:
        return image
    top = float(2**bits - 1)
    return Image((top - image.array).astype(np.float32), image.affine, modality=image.modality,
                 meta={**image.meta, "inverted_monochrome1": True})  # fmt: skip


def load_case_images(
    paths: Sequence, modalities: int, channels: int | None = None
) -> list[Image | None]:
    """Read one case's files (``None`` = missing modality), check each
    (:func:`check_case_image`; RGB becomes grey for a one-channel model; MONOCHROME1 DICOM is
    inverted to dense = bright) and that they share a grid."""
    from medimg.io.api import load

    if len(paths) != modalities:
        raise InputError(
            f"the model takes {modalities} modalities, got {len(paths)} file(s) for this case; "
            "give one file per modality (an empty manifest cell marks a missing one)"
        )
    images = [None if p is None else check_case_image(_as_monochrome2(load(p), p), p, channels)
              for p in paths]  # fmt: skip
    first = next((im for im in images if im is not None), None)
    if first is None:
        raise InputError("every modality of this case is missing")
    for p, im in zip(paths, images):
        if im is not None and im.spatial_shape != first.spatial_shape:
            raise InputError(
                f"modalities are not co-registered: {im.spatial_shape} vs {first.spatial_shape}; "
                "resample them onto one grid first",
                p,
            )
    return images


def _augment(x: np.ndarray, strength: float) -> np.ndarray:
    """Label-preserving jitter: shift by up to 1 px, intensity gain/offset, Gaussian noise.
    Plain numpy on the global RNG, which the engine seeds per ``(seed, step, index)``."""
    shift = np.random.randint(-1, 2, size=x.ndim - 1)  # noqa: NPY002
    x = np.roll(x, tuple(shift), axis=tuple(range(1, x.ndim)))
    gain = 1 + strength * 0.05 * np.random.randn()  # noqa: NPY002
    x = x * gain + strength * 0.02 * np.random.randn()  # noqa: NPY002
    return (x + strength * 0.01 * np.random.randn(*x.shape)).astype(np.float32)  # noqa: NPY002


class SampleDataset(Dataset):
    """Training samples with augmentation and, for fusion models, random modality dropout
    (so a case with a modality missing at inference is a situation the model has seen)."""

    def __init__(self, data: CaseArrays, augment: float = 1.0, modality_dropout: float = 0.0):
        self.data, self.augment, self.drop = data, augment, modality_dropout

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x, present = self.data.x[i], self.data.present[i].copy()
        if self.augment:
            x = _augment(x, self.augment)
        if self.drop and present.sum() > 1 and np.random.rand() < self.drop:  # noqa: NPY002
            present[np.random.randint(len(present))] = False  # noqa: NPY002
        return {"x": torch.from_numpy(np.ascontiguousarray(x)),
                "y": torch.as_tensor(self.data.y[i]),
                "present": torch.from_numpy(present)}  # fmt: skip


def _strong_augment(x: np.ndarray, strength: float) -> np.ndarray:
    """A heavier label-preserving perturbation for FixMatch's student view: a left-right flip
    (a finding in either half keeps its label), shifts up to 3 px, contrast gamma, gain/offset,
    blur or sharpening, and more noise than :func:`_augment`. No cut-out: it could erase the
    few-pixel finding the label hangs on."""
    if np.random.rand() < 0.5:  # noqa: NPY002
        x = x[:, ::-1]
    shift = np.random.randint(-3, 4, size=x.ndim - 1)  # noqa: NPY002
    x = np.roll(x, tuple(shift), axis=tuple(range(1, x.ndim)))
    lo, hi = float(x.min()), float(x.max())
    span = max(hi - lo, 1e-6)
    gamma = float(np.exp(strength * 0.25 * np.random.randn()))  # noqa: NPY002
    x = lo + span * np.clip((x - lo) / span, 0, 1) ** gamma
    s = strength * np.random.uniform(-0.6, 0.6)  # noqa: NPY002  < 0 blur, > 0 sharpen
    smooth = ndimage.gaussian_filter(x, [0] + [0.8] * (x.ndim - 1))
    x = x + s * (x - smooth) if s > 0 else x + (-s) * (smooth - x)
    gain = 1 + strength * 0.1 * np.random.randn()  # noqa: NPY002
    x = x * gain + strength * 0.05 * np.random.randn()  # noqa: NPY002
    noise = strength * np.random.uniform(0.0, 0.04)  # noqa: NPY002
    return (x + noise * np.random.randn(*x.shape)).astype(np.float32)  # noqa: NPY002


class PairedSemiDataset(Dataset):
    """Semi-supervised items: one labelled image and ``ratio`` unlabelled images (the standard
    recipe's separate, larger unlabelled batch: a batch of ``B`` items holds ``B`` labelled and
    ``ratio * B`` unlabelled images however few labels there are).

    The item count is the larger set's size; item ``i`` takes labelled image ``i mod L`` (so the
    engine's per-epoch permutation covers every label equally often, without replacement
    within an epoch) and unlabelled image ``i mod U`` plus ``ratio - 1`` drawn at random. Each
    unlabelled image comes as two views, ``xu_teacher`` and ``xu_student`` ``(ratio, C, ...)``:
    for ``mean_teacher`` both are weakly and independently augmented (teacher and student
    input); for ``fixmatch`` the second is strongly augmented (:func:`_strong_augment`)."""

    def __init__(self, labelled: CaseArrays, unlabelled: CaseArrays, augment: float = 1.0,
                 ratio: int = 1, strong: bool = False):  # fmt: skip
        if len(labelled) == 0 or len(unlabelled) == 0:
            raise InputError("semi-supervised training needs labelled and unlabelled images")
        if ratio < 1:
            raise InputError(f"unlabelled_ratio must be >= 1, got {ratio}")
        self.lab, self.unl, self.augment = labelled, unlabelled, augment
        self.ratio, self.strong = ratio, strong

    def __len__(self) -> int:
        return max(len(self.unl), len(self.lab))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j = i % len(self.lab)
        extra = np.random.randint(len(self.unl), size=self.ratio - 1)  # noqa: NPY002
        idx = [i % len(self.unl), *extra.tolist()]
        weak = [_augment(self.unl.x[k], self.augment) for k in idx]
        other = _strong_augment if self.strong else _augment
        student = [other(self.unl.x[k], self.augment) for k in idx]
        out = {
            "x": _augment(self.lab.x[j], self.augment),
            "xu_teacher": np.stack(weak),
            "xu_student": np.ascontiguousarray(np.stack(student)),
        }
        return {**{k: torch.from_numpy(v) for k, v in out.items()},
                "y": torch.as_tensor(self.lab.y[j])}  # fmt: skip
