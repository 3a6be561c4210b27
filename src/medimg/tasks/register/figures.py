"""The pair overview PNG: what a person checks after registering a pair.

Panels (middle slice along the last axis of 3D images): fixed, moving, warped, a checkerboard of
fixed and warped, |fixed - moving| before and |fixed - warped| after, the deformation grid (lines
of the fixed grid drawn at their mapped positions) and the Jacobian determinant (blue < 1 < red,
folded voxels <= 0 in black).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medimg.io.image import Image
from medimg.tasks.register.data import normalise

__all__ = ["overview_png"]


def _slice(a: np.ndarray) -> np.ndarray:
    return a[..., a.shape[-1] // 2] if a.ndim == 3 else a


def overview_png(
    fixed: Image, moving: Image, warped: Image, field: Image, jacobian: np.ndarray, path: Path
) -> Path:
    """Write the overview figure for a pair on the fixed grid (``moving`` already resampled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    from medimg.metrics.registration import field_to_voxels

    f, m, w = (_slice(normalise(x.array)[0]) for x in (fixed, moving, warped))
    u = field_to_voxels(field.array, fixed.affine)
    uu = np.stack([_slice(c) for c in u[:2]])
    jac = _slice(jacobian)
    tiles = max(4, f.shape[0] // 8)
    ii, jj = np.indices(f.shape)
    check = np.where(((ii // tiles) + (jj // tiles)) % 2 == 0, f, w)
    fig, axes = plt.subplots(2, 4, figsize=(13, 6.8))
    panels = [("fixed", f), ("moving", m), ("warped", w), ("checkerboard fixed/warped", check),
              ("|fixed - moving| before", np.abs(f - m)), ("|fixed - warped| after", np.abs(f - w))]  # fmt: skip
    for ax, (title, img) in zip(axes.ravel(), panels):
        vmax = 1.0 if "|" not in title else max(float(np.abs(f - m).max()), 1e-6)
        ax.imshow(img.T, cmap="gray", origin="lower", vmin=0, vmax=vmax)
        ax.set_title(title, fontsize=9)
    ax = axes[1, 2]
    ax.imshow(f.T, cmap="gray", origin="lower", alpha=0.4)
    step = max(2, f.shape[0] // 24)
    pi, pj = ii + uu[0], jj + uu[1]
    for k in range(0, f.shape[0], step):
        ax.plot(pi[k, :], pj[k, :], "r-", lw=0.6)
    for k in range(0, f.shape[1], step):
        ax.plot(pi[:, k], pj[:, k], "r-", lw=0.6)
    ax.set_title("deformation grid", fontsize=9)
    ax = axes[1, 3]
    jmax = max(float(np.abs(jac - 1).max()), 1e-3)
    im = ax.imshow(jac.T, cmap="coolwarm", origin="lower",
                   norm=TwoSlopeNorm(1.0, 1 - jmax, 1 + jmax))  # fmt: skip
    folded = np.ma.masked_where(jac.T > 0, np.zeros_like(jac.T))
    ax.imshow(folded, cmap="gray", vmin=0, vmax=1, origin="lower")
    ax.set_title(f"Jacobian det (folded: {100 * float((jacobian <= 0).mean()):.2f} %)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
