"""What a training sample is: a foreground-oversampled, augmented patch of a preprocessed case.

Preprocessing (:func:`preprocess_image`) resamples to the plan's target spacing and normalises
per the plan. :class:`PatchDataset` draws, per item, a case and a patch: with probability
``plan.foreground_oversample`` (1/3 like nnU-Net) centred on a voxel of a random foreground class
present in the case, else anywhere; then MONAI augmentation (affine rotation/scaling, noise,
blur, brightness, gamma, simulated low resolution, mirroring). All randomness comes from the
generators the engine seeds per ``(seed, step, index)``, so a sample is reproducible.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from medimg.errors import InputError
from medimg.io.image import Image
from medimg.tasks.segment.plan import SegPlan

__all__ = [
    "PatchDataset",
    "build_augmentation",
    "normalize",
    "preprocess_image",
    "preprocess_labels",
]


def _needs_resampling(image: Image, plan: SegPlan) -> bool:
    return not np.allclose(image.spacing, plan.target_spacing, rtol=0.01)


def check_input(image: Image, plan: SegPlan, source: str = "image") -> None:
    """One-line errors for images the model cannot take (wrong dimensionality or channels)."""
    if image.spatial_ndim != len(plan.target_spacing):
        found = image.meta.get("declared_modality") or ""  # from a DICOM header, if any
        raise InputError(
            f"{source}: a {image.spatial_ndim}D {found + ' ' if found else ''}image given to a "
            f"model planned for {len(plan.target_spacing)}D {plan.modality} data; use a model "
            f"trained on {image.spatial_ndim}D images"
        )
    if image.num_channels != len(plan.channel_names):
        raise InputError(
            f"{source}: {image.num_channels} channel(s) but the model expects "
            f"{len(plan.channel_names)} ({', '.join(plan.channel_names)}); pass one file per channel"
        )


def normalize(array: np.ndarray, plan: SegPlan) -> np.ndarray:
    """Per-channel normalisation of a ``(C, ...)`` array as the plan says (float32)."""
    out = np.empty(array.shape, np.float32)
    for c, norm in enumerate(plan.normalization):
        x = array[c].astype(np.float32)
        if norm.scheme == "ct":  # global foreground statistics: HU keep their meaning
            x = np.clip(x, norm.clip_low, norm.clip_high)
            out[c] = (x - norm.mean) / max(norm.std, 1e-8)
        else:  # MR: arbitrary units differ per scan, so z-score each image
            out[c] = (x - x.mean()) / max(float(x.std()), 1e-8)
    return out


def preprocess_image(image: Image, plan: SegPlan) -> tuple[np.ndarray, Image]:
    """``(normalised array on the target grid, resampled image)`` of an intensity image."""
    check_input(image, plan, str(image.meta.get("case_id", "image")))
    if _needs_resampling(image, plan):
        from medimg.tasks.segment.resample import resample_to_spacing

        image = resample_to_spacing(image, tuple(plan.target_spacing), order=1)
    return normalize(image.array, plan), image


def preprocess_labels(labels: Image, plan: SegPlan) -> np.ndarray:
    """Labels on the target grid, uint8 ``(X, Y, Z)``."""
    if _needs_resampling(labels, plan):
        from medimg.tasks.segment.resample import resample_to_spacing

        labels = resample_to_spacing(labels, tuple(plan.target_spacing), order=0)
    return np.asarray(labels.array[0], dtype=np.uint8)


#: (probability, range) of each augmentation: nnU-Net-like, and a stronger set for
#: fine-tuning on a handful of cases (about twice the probability, wider ranges)
_AUGMENTATION = {
    False: {"rotate": 0.26, "affine": (0.2, 0.15), "noise": (0.1, 0.1),
            "smooth": (0.1, (0.5, 1.0)), "scale": (0.15, 0.25), "gamma": (0.15, (0.7, 1.5)),
            "lowres": 0.125},
    True: {"rotate": 0.5, "affine": (0.5, 0.25), "noise": (0.25, 0.15),
           "smooth": (0.2, (0.5, 1.25)), "scale": (0.3, 0.3), "gamma": (0.3, (0.6, 1.7)),
           "lowres": 0.25},
}  # fmt: skip


def build_augmentation(plan: SegPlan, strong: bool = False):  # -> monai.transforms.Compose
    """nnU-Net-like augmentation from MONAI dictionary transforms (keys image, label);
    ``strong``: the few-shot set (more often, wider ranges)."""
    from monai import transforms as mt

    a = _AUGMENTATION[strong]
    d = len(plan.patch_size)
    rot = [0.0] * d if d == 3 else [a["rotate"]]
    if d == 3:
        rot[2] = a["rotate"]  # in-plane rotation only: safe for thick slices
    keys, img = ["image", "label"], ["image"]
    sigma = a["smooth"][1]
    return mt.Compose(
        [
            mt.RandAffined(keys, prob=a["affine"][0], rotate_range=rot,
                           scale_range=[a["affine"][1]] * d, mode=("bilinear", "nearest"),
                           padding_mode="border"),
            mt.RandGaussianNoised(img, prob=a["noise"][0], std=a["noise"][1]),
            mt.RandGaussianSmoothd(img, prob=a["smooth"][0], sigma_x=sigma, sigma_y=sigma,
                                   sigma_z=sigma),
            mt.RandScaleIntensityd(img, prob=a["scale"][0], factors=a["scale"][1]),
            mt.RandAdjustContrastd(img, prob=a["gamma"][0], gamma=a["gamma"][1]),
            mt.RandSimulateLowResolutiond(img, prob=a["lowres"], zoom_range=(0.5, 1.0)),
            *[mt.RandFlipd(keys, prob=0.5, spatial_axis=ax) for ax in plan.mirror_axes],
        ]
    )  # fmt: skip


class PatchDataset(Dataset):
    """Random patches of preprocessed cases; ``len`` is virtual (``samples_per_epoch``)."""

    def __init__(
        self,
        images: list[np.ndarray],
        labels: list[np.ndarray],
        plan: SegPlan,
        *,
        samples_per_epoch: int = 250,
        augment: bool | None = None,
    ) -> None:
        if not images:
            raise InputError("no training cases; the training set is empty")
        self.images, self.labels, self.plan = images, labels, plan
        self.n = samples_per_epoch
        self.transform = (
            build_augmentation(plan) if (plan.augment if augment is None else augment) else None
        )
        rng = np.random.default_rng(0)
        self.fg = []  # per case: {class: (N, 3) voxel coordinates}, subsampled
        for lab in labels:
            per = {}
            for k in range(1, plan.num_classes):
                idx = np.argwhere(lab == k)
                if len(idx) > 4000:
                    idx = idx[rng.choice(len(idx), 4000, replace=False)]
                if len(idx):
                    per[k] = idx
            self.fg.append(per)

    def __len__(self) -> int:
        return self.n

    def _patch_shape(self) -> list[int]:
        p = list(self.plan.patch_size)
        return [*p, 1] if self.plan.configuration == "2d" and self.images[0].ndim == 4 else p

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        case = index % len(self.images)
        img, lab = self.images[case], self.labels[case]
        shape, patch = lab.shape, self._patch_shape()
        fg = self.fg[case]
        # numpy's global generator: the engine seeds it per (seed, step, index) before each read
        rand = np.random
        if fg and rand.random_sample() < self.plan.foreground_oversample:
            cls = list(fg)[rand.randint(len(fg))]
            centre = fg[cls][rand.randint(len(fg[cls]))]
            lo = [int(c) - p // 2 for c, p in zip(centre, patch)]
        else:
            lo = [rand.randint(min(0, s - p), max(0, s - p) + 1) for s, p in zip(shape, patch)]
        lo = [int(np.clip(v, min(0, s - p), max(0, s - p))) for v, s, p in zip(lo, shape, patch)]
        x = np.zeros((img.shape[0], *patch), np.float32)
        y = np.zeros((1, *patch), np.uint8)
        src = tuple(slice(max(0, a), min(s, a + p)) for a, s, p in zip(lo, shape, patch))
        dst = tuple(slice(max(0, -a), max(0, -a) + (sl.stop - sl.start)) for a, sl in zip(lo, src))
        x[(slice(None), *dst)] = img[(slice(None), *src)]
        y[(slice(None), *dst)] = lab[src]
        if self.plan.configuration == "2d" and x.ndim == 4:
            x, y = x[..., 0], y[..., 0]
        sample = {"image": torch.from_numpy(x), "label": torch.from_numpy(y.astype(np.float32))}
        if self.transform is not None:
            sample = self.transform(sample)
        return {"image": torch.as_tensor(sample["image"]).float(),
                "label": torch.as_tensor(sample["label"]).round().long()}  # fmt: skip
