"""Real brain T1 volumes with reference tissue maps, and their T2-/PD-like versions: what the
brain model is validated on (never trained on).

The reference of each volume is the classical tissue map of
:mod:`medimg.phantoms.synth_brain` (multi-Otsu inside a brain mask: CSF, GM, WM; no deep grey
matter). The model's deep grey matter therefore counts as grey matter when scored ("all GM"),
and the model's labels outside the reference brain mask count against it (the input is the
unstripped head). T2- and PD-like versions are made from the same T1 intensities
(:func:`~medimg.phantoms.synth_brain.contrast_variant`), so their reference is the same map.

Subjects: ``itk_t1`` (the ITK KmeansTest T1, a single 2x2x3 mm scan with its own skull-strip
mask) and ``pydeface_mean`` (pydeface's mean T1 head with face, 1 mm, a high-SNR average but
blurred by averaging; its brain mask is Colin27's ``ch2bet`` mask carried over by an ANTs SyN
registration of ``ch2`` to it, since the file comes without one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medimg.errors import InputError
from medimg.io.image import Image

__all__ = ["CONTRASTS", "SUBJECTS", "RealBrainCase", "brain_dice", "real_brain_cases"]

#: Contrasts each real volume is scored in.
CONTRASTS = ("t1", "t2", "pd")
#: Scored classes: name -> model classes counted (deep GM is grey matter: the reference has
#: no deep grey class) and the reference classes.
SCORED = {"csf": ((1,), (1,)), "gm": ((2, 4), (2,)), "wm": ((3,), (3,))}


@dataclass
class RealBrainCase:
    """One real head: ``image`` (unstripped T1, or a made contrast), ``reference`` labels 0-3
    on its grid, ``name`` and ``contrast``."""

    name: str
    contrast: str
    image: Image
    reference: Image


#: Real heads :func:`real_brain_cases` can give (training validates on the first only).
SUBJECTS = ("itk_t1", "pydeface_mean")


def real_brain_cases(
    contrasts: tuple[str, ...] = CONTRASTS, subjects: tuple[str, ...] = ("itk_t1",)
) -> list[RealBrainCase]:
    """Each of ``subjects`` (:data:`SUBJECTS`; unstripped heads) with its classical reference
    tissue map, in each of ``contrasts``. Fetches into the data cache on first use
    (bench/training only)."""
    from medimg.phantoms.synth_brain import contrast_variant

    cases = []
    for name in subjects:
        if name not in SUBJECTS:
            raise InputError(f"subject must be one of {SUBJECTS}, got {name!r}")
        head, ref = _itk_t1() if name == "itk_t1" else _pydeface_mean()
        t1 = head.array[0].astype(np.float32)
        for c in contrasts:
            arr = t1 if c == "t1" else contrast_variant(t1, ref.array[0], c)
            image = Image(arr[None], head.affine, modality="MR", meta={"case_id": f"{name}_{c}"})
            cases.append(RealBrainCase(name, c, image, ref))
    return cases


def _itk_t1() -> tuple[Image, Image]:
    """The unstripped ``KmeansTest_T1UCharRaw`` and the tissue map of
    :func:`~medimg.phantoms.synth_brain.itk_t1_labels`."""
    from medimg.datasets.real_sources import real_file
    from medimg.io.api import load
    from medimg.phantoms.synth_brain import itk_t1_labels

    _, ref = itk_t1_labels()
    return load(real_file("itk-examples", "KmeansTest_T1UCharRaw.nii.gz")), ref


def _pydeface_mean() -> tuple[Image, Image]:
    """pydeface's mean head and its tissue map (multi-Otsu inside Colin27's brain mask, carried
    over by ANTs: affine + SyN of ``ch2`` to the head at 2 mm, one thread, fixed seed)."""
    import os

    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    import ants

    from medimg.datasets.real_sources import real_file
    from medimg.io.api import load
    from medimg.phantoms.synth_brain import BRAIN_LABELS, tissue_labels

    path = real_file("pydeface", "mean_reg2mean.nii.gz")
    fixed = ants.image_read(str(path))
    moving = ants.image_read(str(real_file("mricron-data", "ch2.nii.gz")))
    bet = ants.image_read(str(real_file("mricron-data", "ch2bet.nii.gz")))
    coarse = [ants.resample_image(im, (2, 2, 2), use_voxels=False, interp_type=0)
              for im in (fixed, moving)]  # fmt: skip
    reg = ants.registration(*coarse, type_of_transform="SyN", random_seed=0,
                            reg_iterations=(40, 20, 0))  # fmt: skip
    mask = ants.apply_transforms(fixed, ants.threshold_image(bet, 1e-3, 1e9),
                                 reg["fwdtransforms"], interpolator="nearestNeighbor")  # fmt: skip
    head = load(path)
    brain = mask.numpy() > 0
    if brain.shape != head.spatial_shape:
        raise InputError(f"brain mask {brain.shape} and head {head.spatial_shape} differ")
    labels = tissue_labels(head.array[0] * brain)
    meta = {"label_names": BRAIN_LABELS, "source": "pydeface mean head, Colin27 mask by SyN"}
    return head, Image(labels[None], head.affine, modality="SEG", is_label=True, meta=meta)


def brain_dice(pred: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Dice of CSF, all GM (cortical + deep) and WM of a brain model's labels against a
    reference tissue map (labels 0-3) on the same grid."""
    out = {}
    for name, (model_classes, ref_classes) in SCORED.items():
        p, g = np.isin(pred, model_classes), np.isin(reference, ref_classes)
        denom = int(p.sum()) + int(g.sum())
        out[name] = 1.0 if denom == 0 else 2.0 * int((p & g).sum()) / denom
    return out
