"""The segmentation input contract: does this image look like what the model was trained on?

A model planned on CT (Hounsfield units, clipped and z-scored with its training set's
statistics) gives confident nonsense on an MR volume, and a 3D model cannot read a radiograph.
Before any work, :func:`check_contract` compares the input's fingerprint with the model's:

* **modality**: the DICOM ``Modality`` of a series (``MR`` into a ``CT`` model is refused).
  Formats that do not store it (NIfTI, NRRD/MHA) are judged by their intensities:
* **intensities**: a CT model needs Hounsfield units: some voxels of fat or air (below -20 HU)
  and a range of tens of HU at least; an image with no negative values, or one already
  normalised to a few units, is not CT. A model of another modality (z-scored per image) is
  refused a CT-like image: a percent or more of its voxels at air (<= -500) with values above
  +100 as well.
* **dimensionality**: a 2D image (a radiograph) given to a 3D model.

A mismatch is one line naming what the model expects and what was found; ``--force`` runs
anyway (the labels then say which model made them, as every output does: :func:`model_tag`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from medimg.errors import InputError
from medimg.io.image import Image
from medimg.tasks.segment.plan import SegPlan

__all__ = ["InputFingerprint", "check_contract", "expected", "input_fingerprint", "model_tag"]

#: Modality codes that say nothing about the image (formats without the tag, Secondary Capture).
UNDECLARED = {"", "OT", "SC"}
_SAMPLE = 200_000  # voxels enough for robust percentiles


@dataclass
class InputFingerprint:
    """What an input image is: its declared modality (``""`` when its format has none), its
    dimensionality and robust intensity statistics of its first channel."""

    modality: str
    spatial_shape: tuple[int, ...]
    low: float  # 0.5th percentile
    high: float  # 99.5th percentile
    air_fraction: float  # share of voxels <= -500

    def describe(self) -> str:
        kind = f"{self.modality} " if self.modality else ""
        flat = len(self.spatial_shape) == 2 or min(self.spatial_shape) == 1
        dims = "2D (single-slice)" if flat else f"{len(self.spatial_shape)}D"
        return f"a {dims} {kind}image with values {self.low:.4g}..{self.high:.4g}"


def input_fingerprint(image: Image, declared_modality: str = "") -> InputFingerprint:
    """The fingerprint of ``image`` (percentiles from a fixed, evenly strided subsample)."""
    flat = np.asarray(image.array[0]).reshape(-1)
    step = max(1, flat.size // _SAMPLE)
    sample = flat[::step].astype(np.float64)
    low, high = np.percentile(sample, [0.5, 99.5])
    modality = declared_modality.upper()
    return InputFingerprint(
        modality="" if modality in UNDECLARED else modality,
        spatial_shape=image.spatial_shape,
        low=float(low),
        high=float(high),
        air_fraction=float(np.mean(sample <= -500)),
    )


def expected(plan: SegPlan) -> str:
    """What the model takes, in words."""
    dims = f"{len(plan.target_spacing)}D"
    if plan.modality == "CT":
        norm = plan.normalization[0]
        return (
            f"{dims} CT in Hounsfield units (trained on {norm.clip_low:.0f}..{norm.clip_high:.0f} "
            "HU inside its structures)"
        )
    return f"{dims} {plan.modality} images"


def _mismatch(fp: InputFingerprint, plan: SegPlan) -> str | None:
    """Why the image does not fit the plan, or None."""
    want = plan.modality.upper()
    if fp.modality:
        return None if fp.modality == want else f"{fp.modality} is not {want}"
    if want == "CT":
        if fp.high - fp.low < 20:
            return "a range of a few units: normalised, not Hounsfield units"
        if fp.low >= -20:
            return "no value below -20: no fat or air, so not Hounsfield units"
        return None
    if fp.air_fraction >= 0.01 and fp.low <= -500 and fp.high >= 100:
        return "air at -1000 and tissue above +100: CT-like Hounsfield units"
    return None


def check_contract(
    image: Image,
    plan: SegPlan,
    path: Path | str,
    *,
    declared_modality: str = "",
    force: bool = False,
) -> str | None:
    """Refuse (one line) an image unlike the model's training data; with ``force`` return the
    same finding as a note instead (None when the image fits)."""
    fp = input_fingerprint(image, declared_modality)
    why = _mismatch(fp, plan)
    if why is None:
        return None
    line = (
        f"the model expects {expected(plan)} but found {fp.describe()} ({why}); "
        "use a model trained on such images, or --force to segment anyway"
    )
    if not force:
        raise InputError(line, path)
    return f"{Path(path).name}: {line.split('; use a model')[0]}; segmented anyway (--force)"


def model_tag(name: str, plan: SegPlan, models: Sequence[nn.Module]) -> str:
    """Which model made the labels (:func:`medimg.engine.provenance.model_tag`): its name, the
    data it was planned on, and the first digits of the SHA-1 of its weights (all folds)."""
    from medimg.engine.provenance import model_tag as tag

    return tag("segment", name, models, f"{plan.dataset} {plan.modality}")
