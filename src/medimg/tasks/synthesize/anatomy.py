"""Head label maps for synthesis: brain, CSF, scalp, fat and a two-layer skull.

The appearance models (:mod:`~.appearance`) need a skull, which the brain label maps of
:mod:`medimg.phantoms.synth_brain` do not have (their head is two Otsu classes, "dark" and
"bright", of the unstripped T1). :func:`colin27_head_labels` derives one from Colin27 by
geometry, because on T1 both bone and fluid are dark and no CT of Colin27 exists:

* **skull**: the band of non-brain head (inside the head's outer envelope, filled slice by
  slice, because bone is darker than the cut that made the head mask) closer to the brain than
  to the air and within 15 mm of the brain; in it, voxels darker than the band's Otsu threshold
  (and more than 1 mm from the brain) are bone, cleaned by a closing and an opening. The rest
  of the band within 3 mm of the brain is extra-cerebral CSF; other head voxels are soft
  tissue (skin, muscle, eyes) or fat.
* **diploe**: skull voxels deeper than 1.5 mm inside the bone (Euclidean distance to non-bone):
  the trabecular layer between the outer and inner cortical tables where the skull is thick.
* **fat / soft tissue**: "bright head" voxels split by Otsu of the T1 inside them (fat is the
  brightest tissue on T1).

At the skull base the band also takes in sinuses and the temporal muscles next to bone; the
map is a phantom for training, not a segmentation of Colin27.

:func:`toy_head_labels` draws a random 2D head of nested, noise-deformed ellipses with the same
classes, offline, for tests and the demo (and a fifth of the training slices, for variety).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

__all__ = ["HEAD_LABELS", "colin27_head_labels", "toy_head_labels"]

#: Label values of the synthesis head maps.
HEAD_LABELS = {
    0: "air",
    1: "csf",
    2: "grey_matter",
    3: "white_matter",
    4: "deep_grey",
    5: "soft_tissue",
    6: "fat",
    7: "cortical_bone",
    8: "diploe",
}

#: band of dark head tissue that counts as skull, mm from the brain
SKULL_BAND_MM = 15.0
#: depth inside the bone below which the skull is diploe (trabecular), mm
DIPLOE_DEPTH_MM = 1.5


def derive_head_labels(brain_labels: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """:data:`HEAD_LABELS` map from a :mod:`~medimg.phantoms.synth_brain` map (0-6, 1 mm) and
    its unstripped T1, by the geometric rules of the module text."""
    from skimage.filters import threshold_otsu

    lab = np.asarray(brain_labels)
    t1 = np.asarray(t1, dtype=np.float32)
    out = np.zeros(lab.shape, np.uint8)
    brain = np.isin(lab, (1, 2, 3, 4))
    out[brain] = lab[brain]
    # the head's outer envelope, filled slice by slice: the skull is often darker than the
    # Otsu cut that made the head mask, so it sits in holes labelled background
    closed = ndimage.binary_closing(lab > 0, iterations=3)
    head = np.stack([ndimage.binary_fill_holes(closed[..., k]) for k in range(lab.shape[-1])], -1)
    head |= lab > 0
    d_brain = ndimage.distance_transform_edt(~brain)
    d_air = ndimage.distance_transform_edt(head)
    band = head & ~brain & (d_brain < d_air) & (d_brain <= SKULL_BAND_MM)
    bone = band & (t1 <= threshold_otsu(t1[band])) & (d_brain > 1.0)
    bone = ndimage.binary_opening(ndimage.binary_closing(bone, iterations=1) & band)
    csf = band & ~bone & (d_brain <= 3.0) & (lab != 6)
    out[head & ~brain] = 5
    bright = lab == 6
    cut = threshold_otsu(t1[bright]) if bright.any() else 0
    out[bright & (t1 > cut)] = 6
    out[csf] = 1
    depth = ndimage.distance_transform_edt(bone)
    out[bone] = 7
    out[bone & (depth > DIPLOE_DEPTH_MM)] = 8
    return out


def colin27_head_labels(cache: str | Path | None = None) -> np.ndarray:
    """``(181, 217, 181)`` uint8 :data:`HEAD_LABELS` of Colin27 at 1 mm (axial = last axis),
    derived once and kept in the data cache. Fetches ``mricron-data`` on first use: for training
    and bench scripts, never tests."""
    from medimg.datasets.real_sources import cache_dir

    folder = Path(cache) if cache else Path(cache_dir()) / "synthesize"
    path = folder / "colin27_head_labels.npz"
    if path.is_file():
        with np.load(path) as z:
            return z["labels"]
    from medimg.phantoms.synth_brain import colin27_labels

    head, labels = colin27_labels(with_head=True)
    out = derive_head_labels(labels.array[0], head.array[0])
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".colin27_head_labels.{os.getpid()}.npz"
    np.savez_compressed(tmp, labels=out)
    tmp.replace(path)
    return out


def _ring(shape: tuple[int, int], centre, radii, wobble: torch.Tensor, grow: float) -> np.ndarray:
    """Inside an ellipse of ``radii + grow`` (mm) whose boundary wobbles by ``wobble`` (mm)."""
    yy, xx = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]))
    dx, dy = (xx - centre[0]) / (radii[0] + grow), (yy - centre[1]) / (radii[1] + grow)
    r = np.sqrt(dx**2 + dy**2)
    scale = (radii[0] + radii[1]) / 2 + grow
    return r * scale < scale + wobble.numpy()


def toy_head_labels(shape: tuple[int, int] = (192, 224), seed: int = 0) -> np.ndarray:
    """A random 2D head ``shape`` (1 mm pixels) with the :data:`HEAD_LABELS` classes: skin and
    fat layers, a skull with diploe where it is thick, CSF, a folded cortex, white matter,
    ventricles and deep grey nuclei. Deterministic in ``seed``; no data needed."""
    from medimg.phantoms.synth_ops import smooth_noise

    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(int(seed))
    sx, sy = shape
    c = (sx / 2 + rng.uniform(-4, 4), sy / 2 + rng.uniform(-4, 4))
    radii = (rng.uniform(0.36, 0.42) * sx, rng.uniform(0.38, 0.43) * sy)
    slow = smooth_noise(shape, (5, 5), gen, 2.0)
    folds = smooth_noise(shape, (22, 22), gen, 3.5)
    lab = np.zeros(shape, np.uint8)
    skin, fat = rng.uniform(1.5, 3), rng.uniform(2, 5)
    table, diploe = rng.uniform(1.5, 2.5), rng.uniform(0, 4)
    csf = rng.uniform(1, 3)
    lab[_ring(shape, c, radii, slow, 0)] = 5
    edge = -skin
    lab[_ring(shape, c, radii, slow, edge)] = 6
    edge -= fat
    lab[_ring(shape, c, radii, slow, edge)] = 7
    edge -= table
    if diploe > 1.0:
        lab[_ring(shape, c, radii, slow, edge)] = 8
        edge -= diploe
    lab[_ring(shape, c, radii, slow, edge)] = 7
    edge -= table
    lab[_ring(shape, c, radii, slow, edge)] = 1
    edge -= csf
    lab[_ring(shape, c, radii, slow, edge)] = 2
    cortex = rng.uniform(4, 7)
    lab[_ring(shape, c, radii, slow + folds, edge - cortex)] = 3
    # ventricles and deep grey: small ellipses near the centre
    for _ in range(2):
        off = (rng.uniform(-0.12, 0.12) * sx, rng.uniform(-0.1, 0.1) * sy)
        r = (rng.uniform(0.06, 0.1) * sx, rng.uniform(0.04, 0.08) * sy)
        blob = _ring(shape, (c[0] + off[0], c[1] + off[1]), r, 0 * slow, 0)
        lab[blob & (lab == 3)] = 4
    ang = rng.uniform(-0.3, 0.3)
    for side in (-1, 1):
        off = (side * rng.uniform(0.03, 0.06) * sx, rng.uniform(-0.03, 0.03) * sy + ang)
        r = (rng.uniform(0.02, 0.04) * sx, rng.uniform(0.08, 0.14) * sy)
        blob = _ring(shape, (c[0] + off[0], c[1] + off[1]), r, 0 * slow, 0)
        lab[blob & np.isin(lab, (3, 4))] = 1
    return lab
