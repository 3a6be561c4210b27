"""Explanation maps as files: NIfTI heat maps on the input's grid and PNG overlays.

A heat map computed at the model's input size is resampled back onto the input image's voxel
grid and saved with the input's affine, so it overlays the original scan in any viewer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from medimg.io.image import Image
from medimg.io.output import atomic_path
from medimg.typing import PathType

__all__ = ["heatmap_image", "save_overlay_png"]


def heatmap_image(heat: np.ndarray, like: Image) -> Image:
    """``heat`` (spatial, any size) linearly resampled onto ``like``'s grid, as a float32
    :class:`Image` with ``like``'s affine."""
    target = like.spatial_shape
    h = np.asarray(heat, dtype=np.float32)
    if h.shape != target:
        h = ndimage.zoom(h, [t / s for t, s in zip(target, h.shape)], order=1, grid_mode=True,
                         mode="nearest")  # fmt: skip
    return Image(
        h[None].astype(np.float32), like.affine, modality="OT", meta={"content": "heatmap"}
    )


def save_overlay_png(
    image: Image,
    heat: Image,
    path: PathType,
    *,
    boxes: Sequence[Sequence[int]] = (),
    title: str = "",
    overwrite: bool = False,
) -> Path:
    """The image (first channel) with the heat map on top; for a volume, the slice where the map
    peaks. Display: array ``(X, Y)`` transposed so ``Y`` runs down. ``boxes`` are half-open voxel
    ranges ``(i0, j0[, k0], i1, j1[, k1])`` drawn in green."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img, hm = image.array[0], heat.array[0]
    label = ""
    if img.ndim == 3:
        k = int(np.unravel_index(np.argmax(hm), hm.shape)[2])
        img, hm, label = img[..., k], hm[..., k], f" (slice {k})"
    fig, ax = plt.subplots(figsize=(4, 4))
    lo, hi = np.percentile(img, [1, 99])
    ax.imshow(img.T, cmap="gray", vmin=lo, vmax=hi)
    ax.imshow(hm.T, cmap="jet", alpha=0.35, vmin=0, vmax=max(float(hm.max()), 1e-6))
    for b in boxes:
        half = len(b) // 2
        ax.add_patch(plt.Rectangle((b[0] - 0.5, b[1] - 0.5), b[half] - b[0], b[half + 1] - b[1],
                                   fill=False, color="lime", lw=1.5))  # fmt: skip
    ax.set_title((title + label).strip(), fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)
