"""Explanation maps as files: NIfTI heat maps on the input's grid and PNG overlays.

A heat map computed at the model's input size is resampled back onto the input image's voxel
grid and saved with the input's affine, so it overlays the original scan in any viewer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from medimg.errors import InputError
from medimg.io.image import Image
from medimg.io.output import atomic_path
from medimg.typing import PathType

__all__ = ["heatmap_image", "save_overlay_png"]


def heatmap_image(heat: np.ndarray, like: Image) -> Image:
    """``heat`` (spatial, any size) linearly resampled onto ``like``'s grid, as a float32
    :class:`Image` with ``like``'s affine. A 2D map of a single-slice volume ``(X, Y, 1)`` (a
    model that saw the slice as a 2D image) gets the volume's trailing axis back."""
    target = like.spatial_shape
    h = np.asarray(heat, dtype=np.float32)
    while h.ndim < len(target) and target[h.ndim] == 1:
        h = h[..., None]
    if h.ndim != len(target):
        raise InputError(
            f"a {h.ndim}D explanation map cannot be put on a {len(target)}D image of shape "
            f"{target}; explain images of the dimension the model takes"
        )
    if h.shape != target:
        h = ndimage.zoom(h, [t / s for t, s in zip(target, h.shape)], order=1, grid_mode=True,
                         mode="nearest")  # fmt: skip
    return Image(
        h[None].astype(np.float32), like.affine, modality="OT", meta={"content": "heatmap"}
    )


def _squeezed(a: np.ndarray) -> np.ndarray:
    """Drop trailing axes of length 1: a single-slice volume ``(X, Y, 1)`` is shown as 2D."""
    while a.ndim > 2 and a.shape[-1] == 1:
        a = a[..., 0]
    return a


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

    img, hm = _squeezed(image.array[0]), _squeezed(heat.array[0])
    if img.shape != hm.shape or img.ndim not in (2, 3):
        raise InputError(
            f"the heat map {heat.spatial_shape} is not on the image's grid {image.spatial_shape}; "
            "resample it with heatmap_image first",
            path,
        )
    label = ""
    if img.ndim == 3:
        k = int(np.unravel_index(np.argmax(hm), hm.shape)[2])
        img, hm, label = img[..., k], hm[..., k], f" (slice {k})"
    fig, ax = plt.subplots(figsize=(4, 4))
    lo, hi = np.nanpercentile(img, [1, 99]) if np.isfinite(img).any() else (0.0, 1.0)
    ax.imshow(img.T, cmap="gray", vmin=lo, vmax=hi)
    shown = ax.imshow(hm.T, cmap="jet", alpha=0.35, vmin=0, vmax=max(float(hm.max()), 1e-6))
    for b in boxes:
        half = len(b) // 2
        ax.add_patch(plt.Rectangle((b[0] - 0.5, b[1] - 0.5), b[half] - b[0], b[half + 1] - b[1],
                                   fill=False, color="lime", lw=1.5))  # fmt: skip
    ax.set_title((title + label).strip(), fontsize=9)
    ax.axis("off")
    from medimg.report.figures import add_colorbar

    add_colorbar(fig, ax, shown, "explanation (relative)")
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, dpi=100, format="png", bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    return Path(path)
