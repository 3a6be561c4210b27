"""Paired MR / CT test heads as NIfTI files: what ``predict`` and ``evaluate`` read.

Each head is one held-out axial slice (:mod:`~.data`, ``split="test"``, deformation seeds from
``seed``), rendered at 2 mm; the slices are stacked along the third axis (2 mm apart) so one
volume holds ``n`` heads. Files: ``mr.nii.gz`` (T1- or T2-like, arbitrary units),
``ct.nii.gz`` (int16 HU), ``body.nii.gz`` (body mask), ``labels.nii.gz``
(:data:`~.anatomy.HEAD_LABELS`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medimg.io.image import Image

__all__ = ["generated_heads", "write_heads"]

SEED_BASE = 7_000_000


def generated_heads(n: int, *, anatomy: str = "toy", seed: int = 0, contrast: str = "t1"):
    """``(mr, ct, body, labels)`` Images of ``n`` held-out heads, one slice each."""
    from medimg.tasks.synthesize.data import PIXEL_MM, make_sample
    from medimg.tasks.synthesize.train import head_slices

    src = head_slices(anatomy, "test", 0.0 if anatomy == "colin27" else 1.0)
    samples = [make_sample(src, SEED_BASE + seed + i, contrast) for i in range(n)]
    affine = np.diag([PIXEL_MM, PIXEL_MM, PIXEL_MM, 1.0])
    affine[:3, 3] = [-96.0, -112.0, 0.0]

    def stack(key: str) -> np.ndarray:
        return np.stack([getattr(s, key).numpy() for s in samples], -1)[None]

    ct = np.round(stack("ct")).astype(np.int16)
    return (Image(stack("mr").astype(np.float32), affine, modality="MR"),
            Image(ct, affine, modality="CT"),
            Image(stack("body").astype(np.uint8), affine, is_label=True),
            Image(stack("labels").astype(np.uint8), affine, is_label=True))  # fmt: skip


def write_heads(out: str | Path, n: int = 8, *, anatomy: str = "toy", seed: int = 0,
                contrast: str = "t1", overwrite: bool = False) -> Path:  # fmt: skip
    """Write :func:`generated_heads` into the folder ``out`` (whole or not at all)."""
    from medimg.io.api import save
    from medimg.io.output import atomic_dir, check_output_dir

    check_output_dir(out, overwrite)
    images = generated_heads(n, anatomy=anatomy, seed=seed, contrast=contrast)
    with atomic_dir(out, overwrite) as tmp:
        for name, img in zip(("mr", "ct", "body", "labels"), images):
            save(img, tmp / f"{name}.nii.gz")
    return Path(out)
