"""Largest-connected-component post-processing, kept per label only where validation says so.

nnU-Net's rule: removing all but the largest connected component of a label helps when the
network leaves false-positive specks away from a single organ, and hurts for labels that really
occur in several pieces (lesions, both kidneys under one label). So the choice is made per label
on validation cases: apply it only if it raises that label's mean Dice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from medimg.errors import InputError
from medimg.metrics.segmentation import dice

__all__ = ["apply_postprocessing", "choose_postprocessing", "keep_largest_component"]


def keep_largest_component(labels: Any, label_ids: Sequence[int]) -> np.ndarray:
    """Keep only the largest connected component of each label in ``label_ids``.

    Parameters
    ----------
    labels
        Integer label map ``(X, Y)`` or ``(X, Y, Z)``; not modified.
    label_ids
        Labels to clean; voxels of their smaller components become background (0). Other labels
        are left as they are.

    Returns
    -------
    numpy.ndarray
        A cleaned copy. Components are full-connectivity (8 neighbours in 2D, 26 in 3D, as
        nnU-Net via scikit-image), sized by voxel count; ties keep the first found in C order.
    """
    lab = np.asarray(labels)
    if lab.ndim not in (2, 3) or not np.issubdtype(lab.dtype, np.integer):
        raise InputError(
            f"labels must be an integer 2D or 3D label map, got {lab.dtype} of shape {lab.shape}"
        )
    out = lab.copy()
    structure = ndimage.generate_binary_structure(lab.ndim, lab.ndim)
    for lid in label_ids:
        mask = lab == lid
        components, n = ndimage.label(mask, structure=structure)
        if n <= 1:
            continue
        sizes = np.bincount(components.ravel())[1:]  # drop the background count
        out[mask & (components != int(np.argmax(sizes)) + 1)] = 0
    return out


def apply_postprocessing(labels: Any, decisions: dict[int, bool]) -> np.ndarray:
    """Apply :func:`keep_largest_component` to the labels whose decision is ``True``."""
    return keep_largest_component(labels, [lab for lab, keep in decisions.items() if keep])


def choose_postprocessing(
    val_preds: Sequence[Any],
    val_gts: Sequence[Any],
    labels: Sequence[int],
    spacing: Sequence[float],
) -> dict[int, bool]:
    """Decide per label whether largest-component filtering improves mean validation Dice.

    Parameters
    ----------
    val_preds, val_gts
        Predicted and reference label maps of the validation cases (same shapes pairwise).
    labels
        Foreground labels to decide on.
    spacing
        Voxel size in mm, checked against the maps' dimensionality. Dice and the voxel-count
        component sizes do not depend on it (every case of a plan shares the target spacing).

    Returns
    -------
    dict
        ``{label: True}`` where the mean Dice over cases with the filter is strictly higher
        than without it (ties keep the raw prediction, as nnU-Net does), ``False`` otherwise.
        Labels are independent: filtering label ``l`` only changes voxels of ``l``.
    """
    if len(val_preds) != len(val_gts) or len(val_preds) == 0:
        raise InputError(
            f"need the same, non-zero number of predictions and references, "
            f"got {len(val_preds)} and {len(val_gts)}"
        )
    preds = [np.asarray(p) for p in val_preds]
    gts = [np.asarray(g) for g in val_gts]
    for i, (p, g) in enumerate(zip(preds, gts)):
        if p.shape != g.shape:
            raise InputError(f"case {i}: prediction shape {p.shape} != reference {g.shape}")
        if p.ndim != len(spacing):
            raise InputError(f"case {i}: {p.ndim}D maps but spacing has {len(spacing)} values")
    decisions: dict[int, bool] = {}
    for lab in labels:
        before = np.mean([dice(p == lab, g == lab) for p, g in zip(preds, gts)])
        after = np.mean(
            [dice(keep_largest_component(p, [lab]) == lab, g == lab) for p, g in zip(preds, gts)]
        )
        decisions[int(lab)] = bool(after > before)
    return decisions
