"""Where each nodule type of :mod:`medimg.phantoms.nodules` goes in a thorax volume.

:class:`Grid` answers the geometric questions (in the lung? a pleura voxel? which way is the
chest wall?) on the anatomy label map; :func:`place_nodules` draws the nodules and paints them.
All positions are *array mm*: voxel index times spacing, axes ``(slice, row, column)``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medimg.phantoms.nodules import NoduleSpec, draw_spec, paint_nodule

__all__ = ["Grid", "place_nodules"]

_LUNG, _VESSEL, _FISSURE = 3, 4, 14
_WALL = (1, 2, 6, 7, 12)  # fat, muscle, bone, heart, soft tissue: chest wall and mediastinum


def _lung_mask(labels: np.ndarray) -> np.ndarray:
    """Lung parenchyma and the vessels inside it (vessel components touching the lung; the
    aorta and the caval veins lie in a fat plane and stay out)."""
    lung = labels == _LUNG
    comps, _ = ndimage.label(labels == _VESSEL)
    touching = np.unique(comps[ndimage.binary_dilation(lung) & (comps > 0)])
    return lung | np.isin(comps, touching[touching > 0])


class Grid:
    """The scan grid: ``spacing`` (mm per array axis), body ``scale`` and the label map."""

    def __init__(self, spacing: np.ndarray, scale: float, labels: np.ndarray) -> None:
        self.spacing, self.scale, self.labels = np.asarray(spacing, float), float(scale), labels
        self.lung = _lung_mask(labels)
        self.centre_mm = (np.asarray(labels.shape) - 1) / 2 * self.spacing
        self._pleura: np.ndarray | None = None
        self._fissures: np.ndarray | None = None

    def fissures(self) -> np.ndarray:
        """Indices of the fissure voxels."""
        if self._fissures is None:
            self._fissures = np.argwhere(self.labels == _FISSURE)
        return self._fissures

    def index(self, p_mm: np.ndarray) -> tuple[int, ...] | None:
        i = np.round(np.asarray(p_mm) / self.spacing).astype(int)
        if np.any(i < 0) or np.any(i >= self.labels.shape):
            return None
        return tuple(int(v) for v in i)

    def in_lung(self, p_mm: np.ndarray) -> bool:
        i = self.index(p_mm)
        return i is not None and bool(self.lung[i])

    def pleura(self) -> np.ndarray:
        """Lung voxels with a chest-wall or mediastinum voxel among their 6 neighbours."""
        if self._pleura is None:
            wall = ndimage.binary_dilation(np.isin(self.labels, _WALL))
            self._pleura = np.argwhere(wall & (self.labels == _LUNG))
        return self._pleura

    def pick_pleura(self, rng: np.random.Generator) -> np.ndarray | None:
        p = self.pleura()
        return p[rng.integers(len(p))].astype(float) if len(p) else None

    def outward(self, voxel: np.ndarray) -> np.ndarray:
        """Unit vector (array mm) from ``voxel`` towards the wall voxels around it."""
        r = np.maximum(np.round(4.0 / self.spacing).astype(int), 1)
        lo = np.maximum(voxel.astype(int) - r, 0)
        hi = np.minimum(voxel.astype(int) + r + 1, self.labels.shape)
        box = self.labels[tuple(slice(a, b) for a, b in zip(lo, hi))]
        wall = np.argwhere(np.isin(box, _WALL)) + lo
        v = (wall.mean(0) - voxel) * self.spacing if len(wall) else np.ones(3)
        return v / max(np.linalg.norm(v), 1e-6)

    def ball_fraction(self, centre: np.ndarray, radius_mm: float, mask: np.ndarray) -> float:
        """Share of the voxels within ``radius_mm`` of voxel ``centre`` where ``mask`` holds."""
        r = np.ceil(radius_mm / self.spacing).astype(int)
        lo, hi = centre.astype(int) - r, centre.astype(int) + r + 1
        if np.any(lo < 0) or np.any(hi > self.labels.shape):
            return 0.0
        g = np.meshgrid(*[(np.arange(a, b) - c) * s for a, b, c, s in
                          zip(lo, hi, centre, self.spacing)], indexing="ij")  # fmt: skip
        inside = sum(x**2 for x in g) <= radius_mm**2
        return float(mask[tuple(slice(a, b) for a, b in zip(lo, hi))][inside].mean())

    def fissure_normal(self, voxel: np.ndarray) -> np.ndarray:
        """Normal of the fissure sheet at ``voxel``: least-spread axis of its nearby voxels."""
        r = np.maximum(np.round(6.0 / self.spacing).astype(int), 2)
        lo = np.maximum(voxel.astype(int) - r, 0)
        hi = np.minimum(voxel.astype(int) + r + 1, self.labels.shape)
        pts = np.argwhere(self.labels[tuple(slice(a, b) for a, b in zip(lo, hi))] == _FISSURE)
        if len(pts) < 4:
            return np.array([1.0, 0.0, 0.0])
        pts = pts * self.spacing
        _, vecs = np.linalg.eigh(np.cov((pts - pts.mean(0)).T))
        return vecs[:, 0]


def _site(rng, kind: str, spec: NoduleSpec, grid: Grid, segs: list, taken: list):
    """A voxel centre for ``spec`` (or None): free types well inside the lung, juxtapleural on
    the pleura, perifissural on a fissure, vessel-attached on a vessel voxel."""
    r = spec.diameter_mm / 2
    lab = grid.labels
    for _ in range(60):
        if kind == "juxtapleural":
            c = grid.pick_pleura(rng)
        elif kind == "perifissural":
            f = grid.fissures()
            c = f[rng.integers(len(f))].astype(float) if len(f) else None
        elif kind == "vessel_attached":
            thick = [sg for sg in segs if sg[2] >= max(0.7, 0.35 * grid.spacing.max())]
            if not thick:
                return None
            p0, p1, _ = thick[rng.integers(len(thick))]
            i = grid.index(p0 + rng.uniform(0.2, 0.8) * (p1 - p0))
            c = np.asarray(i, float) if i is not None and lab[i] == _VESSEL else None
        else:
            lung = grid.lung
            i = tuple(rng.integers(0, n) for n in lung.shape)
            c = np.asarray(i, float) if lab[i] == _LUNG else None
        if c is None or any(np.linalg.norm((c - t) * grid.spacing) < r + rt + 3 for t, rt in taken):
            continue
        if kind in ("solid", "part_solid", "ground_glass", "calcified"):
            if grid.ball_fraction(c, r + 2.0, grid.lung) < 1.0:
                continue
        elif kind in ("vessel_attached", "perifissural"):
            if grid.ball_fraction(c, r, grid.lung) < 0.9:
                continue
        elif grid.ball_fraction(c, r, grid.lung) < 0.25:  # juxtapleural: on a wall, not in a
            continue  # corner of it
        return c
    return None


def place_nodules(
    rng: np.random.Generator,
    hu: np.ndarray,
    labels: np.ndarray,
    grid: Grid,
    segs: list,
    types: tuple[str, ...],
    count: tuple[int, int],
    diameter_mm: tuple[float, float],
    n_calcifications: tuple[int, int],
) -> list[tuple[np.ndarray, float, str, bool, str]]:
    """Paint ``count`` nodules of ``types`` (drawn uniformly) and small excluded calcifications
    into ``hu``; return ``(centre array mm, diameter, kind, included, margin)`` rows. A nodule
    that finds no room is drawn again smaller (down to 3 mm), then skipped."""
    out: list = []
    taken: list = []
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        kind = str(rng.choice(types))
        spec = draw_spec(rng, kind, diameter_mm)
        c = None
        while c is None:
            c = _site(rng, kind, spec, grid, segs, taken)
            if c is None and spec.diameter_mm <= 3.0:
                break
            if c is None:
                spec.diameter_mm = max(3.0, spec.diameter_mm * 0.7)
        if c is None:
            continue
        if kind == "perifissural":
            spec.flatten = grid.fissure_normal(c)
        allowed = None if kind == "juxtapleural" else grid.lung
        paint_nodule(hu, c, grid.spacing, spec, rng, allowed=allowed)
        taken.append((c, spec.diameter_mm / 2))
        out.append((c * grid.spacing, float(spec.diameter_mm), kind, True, spec.margin))
    for _ in range(int(rng.integers(n_calcifications[0], n_calcifications[1] + 1))):
        spec = NoduleSpec("calcification", "smooth", float(rng.uniform(1.5, 2.8)),
                          float(rng.uniform(300, 900)))  # fmt: skip
        c = _site(rng, "solid", spec, grid, segs, taken)
        if c is not None:
            paint_nodule(hu, c, grid.spacing, spec, rng, allowed=grid.lung)
            taken.append((c, spec.diameter_mm / 2))
            out.append((c * grid.spacing, spec.diameter_mm, "calcification", False, "smooth"))
    return out
