"""Shape primitives of the abdomen generator: smooth random fields, deformable ellipsoids,
superellipse body outlines and capsule (tube) painting, all on a regular mm grid.

Written here (numpy/scipy) rather than taken from a library because they are a few lines each
and must run on a ~1 M-voxel grid in milliseconds; scikit-image's drawing tools are 2D or
voxel-exact and slower for smooth implicit shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = [
    "LABEL_OF",
    "Grid",
    "T",
    "capsules",
    "ellipsoid",
    "rotation",
    "smooth_field",
    "superellipse",
]


@dataclass
class Grid:
    """Voxel-centre coordinates in mm (anatomy frame: +x patient right, +y anterior, +z up,
    z = 0 at the right diaphragm dome), plus the same coordinates after the case's smooth
    random deformation (``X``, ``Y``, ``Z``: full 3D arrays) that every organ is drawn in."""

    x: np.ndarray  # (nx, 1, 1)
    y: np.ndarray  # (1, ny, 1)
    z: np.ndarray  # (1, 1, nz)
    X: np.ndarray
    Y: np.ndarray
    Z: np.ndarray
    spacing: tuple[float, float, float]
    slack: float = 0.0  # largest deformation (mm): bounding boxes grow by it

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.X.shape  # type: ignore[return-value]


def smooth_field(
    shape: tuple[int, ...], spacing: tuple[float, ...], scale_mm: float, rng: np.random.Generator
) -> np.ndarray:
    """Zero-mean, unit-std random field smooth on ``scale_mm`` (low-resolution Gaussian noise,
    smoothed and linearly upsampled: cheap on large grids)."""
    low = [max(2, int(np.ceil(n * s / scale_mm)) + 2) for n, s in zip(shape, spacing)]
    noise = ndimage.gaussian_filter(rng.standard_normal(low), 0.7, mode="wrap")
    field = _linear_zoom(noise, [n / m for n, m in zip(shape, low)])
    field = field[tuple(slice(0, n) for n in shape)]
    if field.shape != tuple(shape):  # zoom may round one voxel short
        field = np.pad(field, [(0, n - m) for n, m in zip(shape, field.shape)], mode="edge")
    field = field - field.mean()
    return (field / max(float(field.std()), 1e-6)).astype(np.float32)


def _linear_zoom(a: np.ndarray, factors) -> np.ndarray:
    """``scipy.ndimage.zoom(a, factors, order=1)`` (same output to 1e-15) as one small matrix
    product per axis: 2-4x faster on the generator's grids."""
    out = a
    for ax, f in enumerate(factors):
        m = a.shape[ax]
        k = round(m * f)
        c = np.arange(k) * ((m - 1) / (k - 1) if k > 1 else 0.0)
        lo = np.clip(np.floor(c).astype(int), 0, m - 1)
        hi, w = np.minimum(lo + 1, m - 1), c - lo
        mat = np.zeros((k, m))
        np.add.at(mat, (np.arange(k), lo), 1 - w)
        np.add.at(mat, (np.arange(k), hi), w)
        out = np.moveaxis(np.tensordot(mat, np.moveaxis(out, ax, 0), axes=1), 0, ax)
    return out


def rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Rotation matrix (radians) about z (yaw), then y (pitch), then x (roll)."""
    cz, sz, cy, sy, cx, sx = (np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch),
                              np.cos(roll), np.sin(roll))  # fmt: skip
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return rz @ ry @ rx


def ellipsoid(
    g: Grid,
    centre,
    semi,
    rot: np.ndarray | None = None,
    bbox: bool = True,
    box: tuple[slice, ...] | None = None,
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Normalised implicit ellipsoid ``sqrt(sum (u_i / s_i)^2) - 1`` (< 0 inside) on the
    deformed grid, evaluated only in its bounding box (or in ``box``, to combine shapes):
    ``(box slices, values in the box)``."""
    c = np.asarray(centre, float)
    s = np.asarray(semi, float)
    if box is None:
        box = _box(g, c, float(s.max()) + 2.0) if bbox else (slice(None),) * 3
    dx, dy, dz = g.X[box] - c[0], g.Y[box] - c[1], g.Z[box] - c[2]
    if rot is None:
        u, v, w = dx, dy, dz
    else:  # local coordinates u = R^T (p - c)
        u = rot[0, 0] * dx + rot[1, 0] * dy + rot[2, 0] * dz
        v = rot[0, 1] * dx + rot[1, 1] * dy + rot[2, 1] * dz
        w = rot[0, 2] * dx + rot[1, 2] * dy + rot[2, 2] * dz
    f = np.sqrt((u / s[0]) ** 2 + (v / s[1]) ** 2 + (w / s[2]) ** 2) - 1.0
    return box, f.astype(np.float32)


def _box(g: Grid, c: np.ndarray, r: float) -> tuple[slice, ...]:
    """Index slices of the grid within ``r`` mm (plus the deformation) of ``c``."""
    out, r = [], r + g.slack
    for axis, coords in enumerate((g.x.ravel(), g.y.ravel(), g.z.ravel())):
        lo = np.searchsorted(coords, c[axis] - r)
        hi = np.searchsorted(coords, c[axis] + r, side="right")
        out.append(slice(int(lo), int(max(lo, hi))))
    return tuple(out)


def superellipse(X, Y, a, b_front, b_back, p: float = 2.3) -> np.ndarray:
    """``(|x|/a)^p + (|y|/b)^p`` (< 1 inside) with a flatter back (``b_back`` for y < 0)."""
    b = np.where(Y >= 0, b_front, b_back)
    return (np.abs(X) / np.maximum(a, 1.0)) ** p + (np.abs(Y) / np.maximum(b, 1.0)) ** p


def capsules(g: Grid, points, radius, out: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of a tube through ``points`` (N, 3) mm with ``radius`` (scalar or per
    point), drawn on the deformed grid as a chain of capsules."""
    pts = np.asarray(points, float)
    rad = np.broadcast_to(np.asarray(radius, float), (len(pts),))
    mask = np.zeros(g.shape, bool) if out is None else out
    for p, q, rp, rq in zip(pts[:-1], pts[1:], rad[:-1], rad[1:]):
        r = max(rp, rq)
        lo, hi = np.minimum(p, q) - r, np.maximum(p, q) + r
        box = _box(g, (lo + hi) / 2, float(np.max(hi - lo) / 2) + 2.0)
        d = q - p
        dx, dy, dz = g.X[box] - p[0], g.Y[box] - p[1], g.Z[box] - p[2]
        t = np.clip((dx * d[0] + dy * d[1] + dz * d[2]) / max(float(d @ d), 1e-6), 0, 1)
        dist2 = (dx - t * d[0]) ** 2 + (dy - t * d[1]) ** 2 + (dz - t * d[2]) ** 2
        mask[box] |= dist2 <= (rp + t * (rq - rp)) ** 2
    return mask


class T:
    """Tissue ids of the generator's tissue map (the image is drawn from these; the training
    labels come from :data:`LABEL_OF`)."""

    AIR, FAT, VFAT, MUSCLE, BONE, CORTEX_BONE, DISC, CSF = 0, 1, 2, 3, 4, 5, 6, 7
    LUNG, LUNG_VESSEL, MYOCARDIUM, HEART_BLOOD, AORTA, IVC, PORTAL = 8, 9, 10, 11, 12, 13, 14
    LIVER, HEPATIC_VESSEL, SPLEEN, KIDNEY_CORTEX, KIDNEY_MEDULLA, RENAL_PELVIS = (
        15,
        16,
        17,
        18,
        19,
        20,
    )
    STOMACH_WALL, STOMACH_CONTENT, GAS, BOWEL_WALL, BOWEL_FLUID, STOOL = 21, 22, 23, 24, 25, 26
    PANCREAS, BILE, RIB, CARTILAGE, ORAL_CONTRAST, TABLE, URINE = 27, 28, 29, 30, 31, 32, 33
    N = 34


#: tissue id -> training label (1 liver, 2 spleen, 3 kidney; the rest 0).
LABEL_OF = np.zeros(T.N, np.uint8)
LABEL_OF[[T.LIVER, T.HEPATIC_VESSEL]] = 1
LABEL_OF[T.SPLEEN] = 2
LABEL_OF[[T.KIDNEY_CORTEX, T.KIDNEY_MEDULLA, T.RENAL_PELVIS]] = 3
