"""Real brain T1 volumes with reference tissue maps, and their T2-/PD-like versions: what the
brain model is validated on (never trained on).

The reference of each volume is the classical tissue map of
:mod:`medimg.phantoms.synth_brain` (multi-Otsu inside a brain mask: CSF, GM, WM; no deep grey
matter). The model's deep grey matter therefore counts as grey matter when scored ("all GM"),
and the model's labels outside the reference brain mask count against it (the input is the
unstripped head). T2- and PD-like versions are made from the same T1 intensities
(:func:`~medimg.phantoms.synth_brain.contrast_variant`), so their reference is the same map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medimg.io.image import Image

__all__ = ["CONTRASTS", "RealBrainCase", "brain_dice", "real_brain_cases"]

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


def real_brain_cases(contrasts: tuple[str, ...] = CONTRASTS) -> list[RealBrainCase]:
    """The ITK KmeansTest T1 (unstripped ``KmeansTest_T1UCharRaw``, 2x2x3 mm) with the
    classical tissue map of :func:`~medimg.phantoms.synth_brain.itk_t1_labels` as reference, in
    each of ``contrasts``. Fetches into the data cache on first use (bench/training only)."""
    from medimg.datasets.real_sources import real_file
    from medimg.io.api import load
    from medimg.phantoms.synth_brain import contrast_variant, itk_t1_labels

    _, ref = itk_t1_labels()
    raw = load(real_file("itk-examples", "KmeansTest_T1UCharRaw.nii.gz"))
    t1 = raw.array[0].astype(np.float32)
    cases = []
    for c in contrasts:
        arr = t1 if c == "t1" else contrast_variant(t1, ref.array[0], c)
        image = Image(arr[None], raw.affine, modality="MR", meta={"case_id": f"itk_t1_{c}"})
        cases.append(RealBrainCase("itk_t1", c, image, ref))
    return cases


def brain_dice(pred: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Dice of CSF, all GM (cortical + deep) and WM of a brain model's labels against a
    reference tissue map (labels 0-3) on the same grid."""
    out = {}
    for name, (model_classes, ref_classes) in SCORED.items():
        p, g = np.isin(pred, model_classes), np.isin(reference, ref_classes)
        denom = int(p.sum()) + int(g.sum())
        out[name] = 1.0 if denom == 0 else 2.0 * int((p & g).sum()) / denom
    return out
