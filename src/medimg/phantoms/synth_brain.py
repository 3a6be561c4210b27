"""Brain label maps from real T1 images, for training and validating on synthesised images.

The label-map generator (:mod:`medimg.phantoms.synth`) needs anatomy: label maps of real brains.
None ships with a licence to train on, so they are derived here by a classical method from the
real T1 volumes that can be fetched (:mod:`medimg.datasets.real_sources`, bench and training
scripts only):

* **tissue classes** (:func:`tissue_labels`): inside the brain mask of a skull-stripped T1
  (voxels above zero, holes filled), the three-class multi-Otsu thresholds of the (optionally
  lightly smoothed) intensities (:func:`skimage.filters.threshold_multiotsu`) split CSF (darkest),
  grey matter and white matter (brightest), as T1 contrast orders them. Multi-Otsu is
  deterministic and, on a high-SNR image such as Colin27 (an average of 27 scans), gives the
  classic tissue split; on a single noisy scan it is only as good as its SNR allows.
* **deep grey matter** (:func:`add_deep_grey`): caudate, putamen, pallidum and thalamus from an
  atlas in the same space (AAL on Colin27) take label 4 where the tissue class is not CSF (the
  pallidum is bright, WM-like, on T1).
* **non-brain head** (``head`` in :func:`tissue_labels`): voxels of the unstripped head outside
  the brain, split by Otsu into dark (skull, extra-cerebral fluid) and bright (scalp, fat)
  classes, so synthesised images look like unstripped scans; they count as background when a
  model is trained (see :data:`TRAIN_LABELS`).

:func:`colin27_labels` and :func:`itk_t1_labels` put these together for the two real brains at
hand (Colin27 from ``mricron-data``; the 128x128x62 T1 of ``itk-examples``): keep one subject
for training and the other for validation.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from medimg.errors import InputError
from medimg.io.image import Image

__all__ = [
    "BRAIN_LABELS",
    "DEEP_GREY_AAL",
    "TRAIN_LABELS",
    "add_deep_grey",
    "colin27_labels",
    "itk_t1_labels",
    "tissue_labels",
    "to_training_labels",
]

#: Label values of the maps made here.
BRAIN_LABELS = {
    0: "background",
    1: "csf",
    2: "cortical_gm",
    3: "wm",
    4: "deep_gm",
    5: "head_dark",
    6: "head_bright",
}
#: The labels a brain segmentation model learns: the head classes become background.
TRAIN_LABELS = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 0, 6: 0}
#: AAL atlas values of the deep grey nuclei (caudate, putamen, pallidum, thalamus; left, right).
DEEP_GREY_AAL = (71, 72, 73, 74, 75, 76, 77, 78)


def _brain_mask(stripped: np.ndarray) -> np.ndarray:
    mask = ndimage.binary_fill_holes(stripped > 0)
    labels, n = ndimage.label(mask)
    if n > 1:  # the largest piece: stray voxels left by skull stripping are not brain
        sizes = ndimage.sum_labels(mask, labels, range(1, n + 1))
        mask = labels == 1 + int(np.argmax(sizes))
    return mask


def tissue_labels(
    stripped_t1: np.ndarray,
    *,
    head_t1: np.ndarray | None = None,
    smooth_sigma: float = 0.0,
) -> np.ndarray:
    """uint8 labels 0 background, 1 CSF, 2 GM, 3 WM of a skull-stripped T1 ``(X, Y, Z)``
    (zero outside the brain), by three-class multi-Otsu inside the brain mask; with ``head_t1``
    (the same scan before skull stripping) also 5/6 for dark/bright non-brain head tissue."""
    from skimage.filters import threshold_multiotsu, threshold_otsu

    t1 = np.asarray(stripped_t1, dtype=np.float32)
    if t1.ndim != 3:
        raise InputError(f"tissue_labels needs a 3D T1 volume, got shape {t1.shape}")
    mask = _brain_mask(t1)
    if mask.sum() < 27:
        raise InputError("the T1 has (almost) no voxels above zero; give a skull-stripped T1")
    values = ndimage.gaussian_filter(t1, smooth_sigma) if smooth_sigma > 0 else t1
    inside = values[mask]
    if np.unique(inside).size < 3:
        raise InputError("the brain holds fewer than 3 distinct intensities; not a T1 volume")
    low, high = threshold_multiotsu(inside, classes=3)
    labels = np.zeros(t1.shape, np.uint8)
    labels[mask] = np.where(inside <= low, 1, np.where(inside <= high, 2, 3))
    if head_t1 is not None:
        head = np.asarray(head_t1, dtype=np.float32)
        if head.shape != t1.shape:
            raise InputError(f"head T1 {head.shape} and stripped T1 {t1.shape} differ in shape")
        body = ndimage.binary_fill_holes(
            ndimage.binary_closing(head > threshold_otsu(head), iterations=2)
        )
        extra = body & ~mask
        if extra.any():
            cut = threshold_otsu(head[extra])
            labels[extra] = np.where(head[extra] <= cut, 5, 6)
    return labels


def to_training_labels(labels: torch.Tensor) -> torch.Tensor:
    """The labels a brain model learns (:data:`TRAIN_LABELS`): synthesise the image from the
    full map (head classes included, so it looks like an unstripped scan), then train on this."""
    top = max(TRAIN_LABELS)
    if labels.numel() and int(labels.max()) > top:
        raise InputError(f"brain label maps hold values 0..{top}, got {int(labels.max())}")
    lut = torch.tensor([TRAIN_LABELS[k] for k in range(top + 1)], device=labels.device)
    return lut[labels.long()]


def add_deep_grey(
    labels: np.ndarray, atlas: np.ndarray, nuclei: tuple[int, ...] = DEEP_GREY_AAL
) -> np.ndarray:
    """``labels`` with deep grey matter (4) where ``atlas`` (same grid) names one of ``nuclei``
    and the tissue is not CSF or background."""
    if atlas.shape != labels.shape:
        raise InputError(f"atlas {atlas.shape} and labels {labels.shape} are not on one grid")
    out = labels.copy()
    deep = np.isin(atlas, nuclei) & np.isin(labels, (2, 3))
    out[deep] = 4
    return out


def colin27_labels(*, with_head: bool = True) -> tuple[Image, Image]:
    """(T1 with skull, labels) of Colin27 (1 mm, ``mricron-data``): tissue classes of
    ``ch2bet``, deep grey from ``aal``, non-brain head classes from ``ch2``. Fetches the
    package into the data cache on first use: for bench and training scripts, not tests."""
    from medimg.datasets.real_sources import real_file
    from medimg.io.api import load

    bet = load(real_file("mricron-data", "ch2bet.nii.gz"))
    head = load(real_file("mricron-data", "ch2.nii.gz"))
    aal = load(real_file("mricron-data", "aal.nii.gz"), is_label=True)
    labels = tissue_labels(bet.array[0], head_t1=head.array[0] if with_head else None)
    labels = add_deep_grey(labels, aal.array[0])
    names = {"label_names": BRAIN_LABELS, "source": "Colin27 (mricron-data)"}
    return head, Image(labels[None], bet.affine, modality="SEG", is_label=True, meta=names)


def itk_t1_labels(*, smooth_sigma: float = 0.5) -> tuple[Image, Image]:
    """(skull-stripped T1, labels 0-3) of the real T1 in ``itk-examples`` (128x128x62,
    2x2x3 mm; no atlas in its space, so no deep grey): ``KmeansTest_T1UCharRaw`` inside the
    brain mask ``KmeansTest_T1RawSkullStrip > 0``. Fetches on first use (bench only)."""
    from medimg.datasets.real_sources import real_file
    from medimg.io.api import load

    raw = load(real_file("itk-examples", "KmeansTest_T1UCharRaw.nii.gz"))
    strip = load(real_file("itk-examples", "KmeansTest_T1RawSkullStrip.nii.gz"))
    t1 = raw.with_array(raw.array * (strip.array > 0))
    labels = tissue_labels(t1.array[0], smooth_sigma=smooth_sigma)
    names = {"label_names": BRAIN_LABELS, "source": "ITK KmeansTest T1 (itk-examples)"}
    return t1, Image(labels[None], t1.affine, modality="SEG", is_label=True, meta=names)
