"""Fingerprint -> plan: nnU-Net's rules, written as one readable, editable YAML file.

Decisions (each a small function so tests can pin it):

* **target spacing**: the median spacing per axis; when the coarsest axis is more than 3x the
  finest (thick slices), that axis takes the 10th percentile instead of the median, so thin-slice
  cases are not thrown away (nnU-Net's anisotropy rule).
* **2D vs 3D**: 2D for 2D data, or when the coarse axis of an anisotropic set holds fewer than
  ``MIN_3D_SLICES`` voxels after resampling (too few slices for 3D context). 2D plans train on
  ``(X, Y, 1)`` patches and predict slice by slice.
* **pooling per axis**: an axis is downsampled at a level only while its feature map stays >= 8
  voxels and its spacing is < 2x the finest current spacing; the 3x3x3 kernel shrinks to 1 along
  an axis that is still >= 2x coarser (so thick-slice axes are pooled later and fewer times).
* **patch and batch size**: start from the median image shape (a small image becomes the whole
  patch), shrink the axis with the largest physical extent until one sample's estimated
  activation memory fits ``memory_budget_mb / 2``; batch = how many fit the budget, at least 2,
  at most what covers 5% of all training voxels.
* **normalisation**: CT: clip to the foreground 0.5/99.5 percentiles widened to at least
  ``CT_WINDOW`` ([-200, 400] HU), then z-score with the foreground mean/std of the whole set;
  other modalities: z-score per image. The wide floor keeps contrast-enhanced organs (kidney
  cortex 150-250 HU, aorta 250-400 HU in the arterial phase) apart from bone and from each
  other: nnU-Net's percentiles of an unenhanced training set (about [-40, 115] HU) would clip
  them all to one value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from medimg.engine.config import TrainConfig, from_yaml, to_dict, validation_interval
from medimg.errors import InputError

__all__ = ["CT_WINDOW", "Normalization", "SegPlan", "load_plan", "make_plan", "save_plan"]

MIN_3D_SLICES = 12
#: the narrowest CT clipping window (HU): fat and air below, enhanced organs and vessels inside
CT_WINDOW = (-200.0, 400.0)
MIN_FEATURE_MAP = 4
MAX_POOLS = 5
ANISOTROPY = 3.0


@dataclass
class Normalization:
    """Per-channel intensity normalisation: ``ct`` (clip + global z-score) or ``zscore``."""

    scheme: Literal["ct", "zscore"] = "zscore"
    clip_low: float | None = None
    clip_high: float | None = None
    mean: float = 0.0
    std: float = 1.0


@dataclass
class SegPlan:
    """Everything training and prediction need; ``plan["key"]`` lists valid keys on a typo."""

    dataset: str = ""
    modality: str = "CT"
    channel_names: list[str] = field(default_factory=lambda: ["CT"])
    label_names: list[str] = field(default_factory=lambda: ["background", "foreground"])
    configuration: Literal["2d", "3d"] = "3d"
    target_spacing: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    median_shape: list[int] = field(default_factory=lambda: [64, 64, 64])
    normalization: list[Normalization] = field(default_factory=lambda: [Normalization()])
    patch_size: list[int] = field(default_factory=lambda: [64, 64, 64])
    pool_strides: list[list[int]] = field(default_factory=list)
    conv_kernels: list[list[int]] = field(default_factory=list)
    filters: list[int] = field(default_factory=list)
    network: Literal["dynunet", "segresnet"] = "dynunet"
    deep_supervision_heads: int = 2
    foreground_oversample: float = 0.33
    augment: bool = True
    mirror_axes: list[int] = field(default_factory=lambda: [0, 1, 2])
    folds: int = 5
    postprocessing: dict[str, bool] = field(default_factory=dict)
    memory_budget_mb: float = 1024.0
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def spatial_dims(self) -> int:
        return 2 if self.configuration == "2d" else 3

    @property
    def batch_size(self) -> int:
        return self.train.batch_size

    @property
    def data_identifier(self) -> str:
        """Changes whenever preprocessing changes (the cache key of preprocessed arrays)."""
        key = json.dumps([self.target_spacing, to_dict(self)["normalization"], self.channel_names])
        return hashlib.sha1(key.encode()).hexdigest()[:10]

    def __getitem__(self, key: str) -> Any:
        names = [f.name for f in dataclasses.fields(self)]
        if key not in names:
            raise InputError(f"plan has no key {key!r}; valid keys: {', '.join(names)}")
        return getattr(self, key)


def target_spacing(spacings: np.ndarray) -> list[float]:
    """Median spacing; the coarse axis of an anisotropic set takes its 10th percentile."""
    target = np.median(spacings, axis=0)
    worst = int(np.argmax(target))
    others = np.delete(target, worst)
    if target[worst] > ANISOTROPY * others.min():
        target[worst] = max(np.percentile(spacings[:, worst], 10), others.max())
    return [float(s) for s in target]


def pooling(patch: list[int], spacing: list[float]) -> tuple[list[list[int]], list[list[int]]]:
    """(strides per down-sampling level, conv kernels per level incl. the bottleneck)."""
    size, sp = list(patch), list(spacing)
    strides, kernels = [], []
    for _ in range(MAX_POOLS):
        finest = min(sp)
        kernels.append([3 if s < 2 * finest else 1 for s in sp])
        st = [
            2 if (size[a] // 2 >= MIN_FEATURE_MAP and sp[a] < 2 * finest) else 1
            for a in range(len(sp))
        ]
        if not any(s == 2 for s in st):
            break
        strides.append(st)
        size = [n // s for n, s in zip(size, st)]
        sp = [s * k for s, k in zip(sp, st)]
    else:
        finest = min(sp)
        kernels.append([3 if s < 2 * finest else 1 for s in sp])
    return strides, kernels


def _divisor(strides: list[list[int]], axis: int) -> int:
    return int(np.prod([s[axis] for s in strides])) if strides else 1


def activation_mb(patch: list[int], strides: list[list[int]], filters: list[int]) -> float:
    """Rough training memory of one sample (float32 activations kept for backward)."""
    vox, total = float(np.prod(patch)), 0.0
    for level, f in enumerate(filters):
        if level:
            vox /= float(np.prod(strides[level - 1]))
        total += vox * f * 24  # 2 convs x (conv, norm, act) x (encoder, decoder) x grads
    return total * 4 / 2**20


def _fit_patch(
    shape: list[int], spacing: list[float], budget_mb: float, base: int, max_f: int
) -> tuple[list[int], list[list[int]], list[list[int]], list[int]]:
    patch = list(shape)
    while True:
        strides, kernels = pooling(patch, spacing)
        patch = [
            int(np.ceil(p / _divisor(strides, a)) * _divisor(strides, a))
            for a, p in enumerate(patch)
        ]
        filters = [min(base * 2**i, max_f) for i in range(len(strides) + 1)]
        if activation_mb(patch, strides, filters) <= budget_mb / 2 or max(patch) <= 8:
            return patch, strides, kernels, filters
        extent = [p * s for p, s in zip(patch, spacing)]
        axis = int(np.argmax([e if p > 8 else -1 for e, p in zip(extent, patch)]))
        patch[axis] = max(8, patch[axis] - max(_divisor(strides, axis), patch[axis] // 8))


def make_plan(
    fp: dict[str, Any],
    *,
    memory_budget_mb: float = 1024.0,
    base_features: int = 16,
    max_features: int = 256,
    network: str = "dynunet",
    configuration: str | None = None,
    max_steps: int = 1000,
) -> SegPlan:
    """Plan a training configuration from a fingerprint (see the module docstring)."""
    spacings, shapes = np.asarray(fp["spacings"], float), np.asarray(fp["shapes"], float)
    labels = {int(k): v for k, v in fp["labels"].items()}
    if sorted(labels) != list(range(len(labels))):
        raise InputError(
            f"labels must be consecutive 0..K-1 (0 = background), got {sorted(labels)}"
        )
    tsp = target_spacing(spacings)
    median = np.median(shapes * spacings / np.asarray(tsp), axis=0)
    median_shape = [max(1, round(m)) for m in median]
    ndim = len(tsp)
    coarse = int(np.argmax(tsp))
    aniso = ndim == 3 and max(tsp) > ANISOTROPY * min(tsp)
    if configuration is None:
        configuration = (
            "2d" if ndim == 2 or (aniso and median_shape[coarse] < MIN_3D_SLICES) else "3d"
        )
    if configuration not in ("2d", "3d"):
        raise InputError(f"configuration must be '2d' or '3d', got {configuration!r}")
    # a 2D plan on 3D data works on (X, Y) slices of the last axis
    shape2 = median_shape[:2] if configuration == "2d" else median_shape
    sp2 = tsp[:2] if configuration == "2d" else tsp
    patch, strides, kernels, filters = _fit_patch(
        shape2, sp2, memory_budget_mb, base_features, max_features
    )
    per_sample = activation_mb(patch, strides, filters)
    total_vox = float(np.sum(np.prod(shapes * spacings / np.asarray(tsp), axis=1)))
    batch = int(np.clip(memory_budget_mb // max(per_sample, 1e-6), 2, 64))
    batch = max(2, min(batch, int(0.05 * total_vox / np.prod(patch))))
    norms = []
    for st in fp["foreground_intensity"]:
        if fp["modality"] == "CT":
            norms.append(
                Normalization(
                    "ct",
                    min(float(st["percentile_00_5"]), CT_WINDOW[0]),
                    max(float(st["percentile_99_5"]), CT_WINDOW[1]),
                    st["mean"],
                    max(st["std"], 1e-3),
                )
            )
        else:
            norms.append(Normalization("zscore"))
    train = TrainConfig(
        max_steps=max_steps, batch_size=batch, lr=2e-3, weight_decay=3e-5, optimizer="adamw",
        lr_schedule="poly", val_every=validation_interval(max_steps), val_metric="dice", val_mode="max",
        checkpoint_every=validation_interval(max_steps), grad_clip=12.0, log_every=10,
    )  # fmt: skip
    return SegPlan(
        dataset=fp["dataset"],
        modality=fp["modality"],
        channel_names=[fp["channel_names"][k] for k in sorted(fp["channel_names"], key=int)],
        label_names=[labels[i] for i in range(len(labels))],
        configuration=configuration,  # type: ignore[arg-type]
        target_spacing=tsp,
        median_shape=median_shape,
        normalization=norms,
        patch_size=patch,
        pool_strides=strides,
        conv_kernels=kernels,
        filters=filters,
        network=network,  # type: ignore[arg-type]
        deep_supervision_heads=max(0, min(2, len(strides) - 1)),
        mirror_axes=list(range(len(patch))),
        folds=int(min(5, max(2, fp["num_cases"]))),
        memory_budget_mb=float(memory_budget_mb),
        train=train,
    )


def save_plan(plan: SegPlan, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the plan as commented YAML (edit it, then train with ``--plan``); the file appears
    only once complete, and an existing one is replaced only with ``overwrite``."""
    from medimg.io.output import atomic_path

    head = (
        "# medimg segmentation plan (medimg segment plan). Edit freely; unknown keys are refused.\n"
        f"# data_identifier: {plan.data_identifier}\n"
    )
    text = head + yaml.safe_dump(to_dict(plan), sort_keys=False)
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(text)
    return Path(path)


def load_plan(path: str | Path) -> SegPlan:
    """Read a plan YAML (or a run/model folder holding ``plan.yaml``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "plan.yaml"
    plan = from_yaml(SegPlan, path)
    if len(plan.patch_size) != (2 if plan.configuration == "2d" else len(plan.target_spacing)):
        raise InputError(
            f"patch_size {plan.patch_size} does not fit configuration {plan.configuration}", path
        )
    return plan
