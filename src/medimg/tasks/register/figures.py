"""The pair overview PNG: what a person checks after registering a pair.

Panels (middle axial slice in radiological view, patient's right on the left): fixed, moving, warped, a checkerboard of
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


def _mapped_grid(fixed: Image, field: Image) -> tuple[np.ndarray, np.ndarray]:
    """Where each voxel of the fixed grid's display slice maps to, as (column, row) positions in
    the radiological display of :func:`~medimg.report.figures.axial_slice`."""
    from medimg.metrics.registration import field_to_voxels

    u = field_to_voxels(field.array, fixed.affine)
    idx = np.indices(fixed.spatial_shape).astype(np.float64) + u
    if fixed.spatial_ndim == 3:  # voxel -> world -> index on the RAS+ grid the display uses
        a = fixed.affine
        canonical = Image(np.zeros((1, *fixed.spatial_shape), np.float32), a).canonical().affine
        to_ras_index = np.linalg.inv(canonical) @ a
        q = (
            np.einsum("ij,j...->i...", to_ras_index[:3, :3], idx)
            + to_ras_index[:3, 3, None, None, None]
        )
        q = [Image(c[None], a).canonical().array[0] for c in q]
        z = q[0].shape[2] // 2
        x, y, shape = q[0][:, :, z], q[1][:, :, z], q[0].shape
    else:
        x, y, shape = idx[0], idx[1], fixed.spatial_shape
    return shape[0] - 1 - x, shape[1] - 1 - y  # the display's column and row


def overview_png(
    fixed: Image, moving: Image, warped: Image, field: Image, jacobian: np.ndarray, path: Path
) -> Path:
    """Write the overview figure for a pair on the fixed grid (``moving`` already resampled):
    middle axial slices in radiological view."""
    from matplotlib.colors import TwoSlopeNorm

    from medimg.report.figures import (
        add_colorbar,
        axial_slice,
        new_figure,
        orientation_letters,
        save_figure,
    )

    def disp(a: np.ndarray) -> np.ndarray:
        return axial_slice(a, affine=fixed.affine if fixed.spatial_ndim == 3 else None)

    f, m, w = (disp(normalise(x.array)[0]) for x in (fixed, moving, warped))
    jac = disp(jacobian)
    tiles = max(4, f.shape[0] // 8)
    ii, jj = np.indices(f.shape)
    check = np.where(((ii // tiles) + (jj // tiles)) % 2 == 0, f, w)
    fig, axes = new_figure(8, panel_inches=3.0, rows=2)
    panels = [("fixed", f), ("moving", m), ("warped", w), ("checkerboard fixed/warped", check),
              ("|fixed - moving| before", np.abs(f - m)), ("|fixed - warped| after", np.abs(f - w))]  # fmt: skip
    for ax, (title, img) in zip(axes.ravel(), panels):
        vmax = 1.0 if "|" not in title else max(float(np.abs(f - m).max()), 1e-6)
        ax.imshow(img, cmap="gray", vmin=0, vmax=vmax)
        ax.set_title(title, fontsize=9)
    ax = axes[1, 2]
    ax.imshow(f, cmap="gray", alpha=0.4)
    col, row = _mapped_grid(fixed, field)
    step = max(2, col.shape[0] // 24)
    for k in range(0, col.shape[0], step):
        ax.plot(col[k, :], row[k, :], "r-", lw=0.6)
    for k in range(0, col.shape[1], step):
        ax.plot(col[:, k], row[:, k], "r-", lw=0.6)
    ax.set_xlim(-0.5, f.shape[1] - 0.5)
    ax.set_ylim(f.shape[0] - 0.5, -0.5)
    ax.set_title("deformation grid", fontsize=9)
    ax = axes[1, 3]
    jmax = max(float(np.abs(jac - 1).max()), 1e-3)
    im = ax.imshow(jac, cmap="coolwarm", norm=TwoSlopeNorm(1.0, 1 - jmax, 1 + jmax))
    ax.imshow(np.ma.masked_where(jac > 0, np.zeros_like(jac)), cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"Jacobian det (folded: {100 * float((jacobian <= 0).mean()):.2f} %)", fontsize=9)
    add_colorbar(fig, ax, im, "Jacobian determinant")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        orientation_letters(ax)
    return save_figure(fig, path, "registration overview, middle axial slice, radiological view")
