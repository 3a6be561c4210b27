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
    "brain_contrast_means",
    "colin27_labels",
    "contrast_variant",
    "itk_t1_labels",
    "labels_at_spacing",
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
#: Tissue intensities (CSF, GM, WM; T1 white matter = 1) of the contrasts that
#: :func:`contrast_variant` makes from a real T1: T2-like (CSF brightest, WM darkest) and
#: PD-like (flat, GM a little above WM and CSF), after typical 1.5-3 T spin-echo contrasts.
CONTRAST_ANCHORS = {"t1": (0.35, 0.7, 1.0), "t2": (1.0, 0.45, 0.3), "pd": (0.85, 0.8, 0.65)}
#: Mean intensities (``[0, 1]``) per brain label value (background, CSF, cortical GM, WM, deep
#: GM, dark head, bright head) of typical contrasts: the templates
#: :func:`brain_contrast_means` jitters. "ct" is a brain CT window (bone bright, GM a little
#: above WM).
CONTRAST_TEMPLATES = {
    "t1": (0.02, 0.25, 0.55, 0.8, 0.65, 0.15, 0.9),
    "t2": (0.02, 0.95, 0.55, 0.35, 0.45, 0.15, 0.7),
    "pd": (0.02, 0.85, 0.75, 0.6, 0.7, 0.2, 0.85),
    "flair": (0.02, 0.1, 0.6, 0.45, 0.55, 0.15, 0.8),
    "ct": (0.0, 0.3, 0.45, 0.4, 0.45, 0.95, 0.35),
}
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


def labels_at_spacing(labels: Image, spacing_mm: float) -> torch.Tensor:
    """A label map (values 0..K-1) resampled to isotropic ``spacing_mm`` as a long tensor:
    each label is resampled as a one-hot channel (linear interpolation) and the largest wins,
    so thin structures (cortex, CSF) survive a coarser grid better than by nearest neighbour.
    Assumes an axis-aligned grid (as the maps of this module are)."""
    import torch.nn.functional as F

    arr = np.asarray(labels.array[0] if labels.array.ndim == 4 else labels.array)
    if arr.ndim != 3:
        raise InputError(f"labels_at_spacing needs a 3D label map, got shape {arr.shape}")
    lab = torch.from_numpy(arr.astype(np.int64))
    k = int(lab.max()) + 1
    size = [max(2, round(n * float(s) / spacing_mm)) for n, s in zip(lab.shape, labels.spacing)]
    out = torch.zeros(size)
    best = torch.full(size, -1.0)
    for v in range(k):  # one channel at a time: a 1 mm head in 7 float channels is ~200 MB
        share = F.interpolate((lab == v).float()[None, None], size=size, mode="trilinear",
                              align_corners=False)[0, 0]  # fmt: skip
        out[share > best] = v
        best = torch.maximum(best, share)
    return out.long()


def contrast_variant(
    t1: np.ndarray, labels: np.ndarray, kind: str, *, mask: np.ndarray | None = None
) -> np.ndarray:
    """A T2- or PD-like image made from a real T1 ``(X, Y, Z)``: inside the brain
    (``mask``, default ``labels > 0``) each intensity is mapped piecewise-linearly so that the
    median T1 intensity of CSF, GM and WM (labels 1, 2, 3 of ``labels``) lands on the tissue
    intensities of :data:`CONTRAST_ANCHORS` ``[kind]`` (scaled to the T1's WM median). The map
    depends on the intensity only, so the T1's noise, bias and partial volume carry over and the
    labels do not leak into the image; outside the brain the T1 is kept (scalp and fat are bright
    on T2 and PD too)."""
    if kind not in CONTRAST_ANCHORS:
        raise InputError(f"contrast must be one of {sorted(CONTRAST_ANCHORS)}, got {kind!r}")
    t1 = np.asarray(t1, dtype=np.float32)
    if t1.shape != labels.shape:
        raise InputError(f"T1 {t1.shape} and labels {labels.shape} are not on one grid")
    inside = labels > 0 if mask is None else np.asarray(mask, bool)
    medians = []
    for k in (1, 2, 3):
        values = t1[labels == k]
        if values.size == 0:
            raise InputError(f"the labels hold no voxel of class {k}; need CSF, GM and WM")
        medians.append(float(np.median(values)))
    if not medians[0] < medians[1] < medians[2]:
        raise InputError("the tissue medians are not ordered CSF < GM < WM: not a T1 image")
    scale = medians[2]
    targets = [a * scale for a in CONTRAST_ANCHORS[kind]]
    # beyond the CSF and WM medians the map continues with the neighbouring segment's slope
    xs = [0.0, *medians, medians[2] * 2]
    slope_lo = (targets[1] - targets[0]) / (medians[1] - medians[0])
    slope_hi = (targets[2] - targets[1]) / (medians[2] - medians[1])
    ys = [targets[0] - slope_lo * medians[0], *targets, targets[2] + slope_hi * medians[2]]
    out = t1.copy()
    out[inside] = np.clip(np.interp(t1[inside], xs, ys), 0.0, None)
    return out


def brain_contrast_means(
    gen: torch.Generator, *, template_prob: float = 0.5, jitter: float = 0.1
) -> dict[int, float] | None:
    """Per-label means for one synthesised brain image: with probability ``template_prob`` a
    :data:`CONTRAST_TEMPLATES` entry (chosen uniformly) with each mean moved by up to
    ``jitter``, else ``None`` (the generator's fully random means).

    Why: fully random contrasts (SynthSeg) make a model contrast-agnostic but need hundreds of
    thousands of steps; on a CPU budget of about a thousand, drawing the common MR contrasts
    (and a CT-like one) half of the time teaches them first, and the random half keeps the
    model from relying on one intensity order."""
    dev = gen.device
    if float(torch.rand((), generator=gen, device=dev)) >= template_prob:
        return None
    names = sorted(CONTRAST_TEMPLATES)
    pick = names[int(torch.randint(len(names), (), generator=gen, device=dev))]
    moves = (torch.rand(len(BRAIN_LABELS), generator=gen, device=dev) * 2 - 1) * jitter
    return {k: float(min(1.0, max(0.0, m + d)))
            for k, (m, d) in enumerate(zip(CONTRAST_TEMPLATES[pick], moves.tolist()))}  # fmt: skip
