"""Synthetic chest CTs for nodule detection, with LUNA16-style ground truth (seeded).

Built on :func:`medimg.phantoms.ct.body_phantom` (anatomy, branching vessel trees whose
bifurcations and cross-sections are the classic false positives, isolated solid and ground-glass
nodules 3-30 mm). This module adds, on the same voxels:

* **part-solid** nodules: about half of the ground-glass ones get a solid core (40-60 % of the
  diameter, 0-60 HU);
* **juxta-pleural** nodules (4-20 mm): centred inside the lung close to its wall, painted only
  over lung and vessel voxels, so they sit on the chest wall or mediastinum like a bump;
* **calcifications** (1.5-2.8 mm, 300-900 HU): small dense distractors, reported as *excluded*
  findings (LUNA16's ``annotations_excluded.csv`` lists such < 3 mm findings: hits on them count
  neither as TP nor FP);
* **quantum noise**: spatially correlated Gaussian noise (15-25 HU std on top of the phantom's
  1 mm and 4 mm textures). An image-domain approximation: projecting 3D volumes through
  :mod:`medimg.physics.ct` for every training case would cost minutes each on a CPU.

Ground truth per finding: centre in RAS+ mm, diameter, kind, and whether LUNA16 would include it.
For varied thoraxes with every nodule type LIDC readers annotate (juxtapleural on the pleura,
vessel-attached on a vessel, perifissural, calcified, spiculated...), see
:func:`medimg.phantoms.thorax.thorax_ct_case`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from medimg.errors import InputError
from medimg.io.image import Image

__all__ = ["DetectionCase", "Finding", "nodule_ct_case"]


@dataclass(frozen=True)
class Finding:
    """A lesion: centre in RAS+ mm, diameter mm, kind (the nodule type); ``included`` False for
    excluded ones; ``margin`` (``smooth``, ``lobulated``, ``irregular``, ``spiculated``)."""

    center_ras: tuple[float, float, float]
    diameter_mm: float
    kind: str
    included: bool = True
    margin: str = "smooth"


@dataclass
class DetectionCase:
    """``image``: CT in HU, ``(1, X, Y, Z)`` float32; ``findings``: the ground truth. Cases of
    :func:`medimg.phantoms.thorax.thorax_ct_case` also carry ``labels`` (the anatomy label
    map on the image's grid) and ``hard_negatives`` (nodule look-alikes, ``included`` False)."""

    image: Image
    findings: list[Finding] = field(default_factory=list)
    labels: Image | None = None
    hard_negatives: list[Finding] = field(default_factory=list)

    @property
    def nodules(self) -> list[Finding]:
        return [f for f in self.findings if f.included]

    @property
    def excluded(self) -> list[Finding]:
        return [f for f in self.findings if not f.included]


def _paint(hu, allowed, center, radius_mm, spacing, value, rng) -> None:
    """Blend a soft-edged sphere of ``value`` HU (plus a little grain) into ``hu`` where
    ``allowed``; ``center`` in voxel indices of the ``(Z, H, W)`` array."""
    sp = np.asarray(spacing, dtype=np.float64)
    half = np.ceil((radius_mm + 2 * sp.max()) / sp).astype(int)
    lo = np.maximum(np.floor(center).astype(int) - half, 0)
    hi = np.minimum(np.floor(center).astype(int) + half + 1, hu.shape)
    if np.any(hi <= lo):
        return
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    grids = np.meshgrid(*[(np.arange(a, b) - c) * s for a, b, c, s in zip(lo, hi, center, sp)],
                        indexing="ij")  # fmt: skip
    dist = np.sqrt(sum(g**2 for g in grids))
    m = np.clip(0.5 - (dist - radius_mm) / sp.min(), 0.0, 1.0) * allowed[box]
    grain = 8.0 * rng.standard_normal(m.shape)
    hu[box] = hu[box] * (1 - m) + m * (value + grain)


def nodule_ct_case(
    seed: int,
    shape: tuple[int, int, int] = (184, 184, 60),
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.5),
    *,
    n_nodules: tuple[int, int] = (1, 4),
    n_juxtapleural: tuple[int, int] = (0, 2),
    n_calcifications: tuple[int, int] = (1, 3),
    noise_hu: tuple[float, float] = (15.0, 25.0),
) -> DetectionCase:
    """A thoracic CT ``(X, Y, Z)`` = ``shape`` with ``spacing`` (in-plane, in-plane, slice) mm.

    Counts are drawn uniformly from the inclusive ranges; the slab's height in the chest varies
    with ``seed``. Same seed, same case.

    >>> case = nodule_ct_case(0, shape=(64, 64, 24), spacing=(5.5, 5.5, 6.0))
    >>> case.image.spatial_shape, all(f.diameter_mm >= 3 for f in case.nodules)
    ((64, 64, 24), True)
    """
    from medimg.phantoms.ct import CTPhantom, body_phantom

    if len(shape) != 3 or len(spacing) != 3 or spacing[0] != spacing[1]:
        raise InputError(f"need a 3D shape and (d, d, dz) spacing, got {shape}, {spacing}")
    rng = np.random.default_rng([seed, 7])
    iso = int(rng.integers(n_nodules[0], n_nodules[1] + 1))
    ph = body_phantom(
        (shape[2], shape[1], shape[0]),
        (spacing[2], spacing[0], spacing[1]),
        z_center=float(rng.uniform(110, 150)),
        n_nodules=iso,
        nodule_diameter_mm=(3.0, 30.0),
        seed=seed,
    )
    sp = ph.spacing  # (slice, row, col)
    hu, lab = ph.hu.astype(np.float64), ph.labels
    lung = np.isin(lab, (3, 4))  # lung parenchyma and its vessels
    findings: list[tuple[np.ndarray, float, str, bool]] = []
    for n in ph.nodules:
        kind = n.kind
        if kind == "ground_glass" and rng.random() < 0.5:
            core = n.diameter_mm * rng.uniform(0.4, 0.6) / 2
            _paint(hu, np.ones_like(lung), np.asarray(n.center_voxel, float), core, sp,
                   rng.uniform(0, 60), rng)  # fmt: skip
            kind = "part_solid"
        findings.append((np.asarray(n.center_voxel, float), n.diameter_mm, kind, True))
    edt = ndimage.distance_transform_edt(lung, sampling=sp)
    for _ in range(int(rng.integers(n_juxtapleural[0], n_juxtapleural[1] + 1))):
        dia = float(np.exp(rng.uniform(np.log(4), np.log(20))))
        ring = (edt > 0.25 * dia) & (edt < 0.45 * dia)  # centre just inside the wall
        if not ring.any():
            continue
        c = np.argwhere(ring)[rng.integers(np.count_nonzero(ring))].astype(float)
        _paint(hu, lung, c, dia / 2, sp, rng.uniform(10, 60), rng)
        findings.append((c, dia, "juxtapleural", True))
    for _ in range(int(rng.integers(n_calcifications[0], n_calcifications[1] + 1))):
        dia = rng.uniform(1.5, 2.8)
        room = edt > dia / 2 + 3
        if not room.any():
            continue
        c = np.argwhere(room)[rng.integers(np.count_nonzero(room))].astype(float)
        _paint(hu, lung, c, dia / 2, sp, rng.uniform(300, 900), rng)
        findings.append((c, dia, "calcification", False))
    sigma = float(rng.uniform(*noise_hu))
    noise = ndimage.gaussian_filter(rng.standard_normal(hu.shape), 0.7)
    hu += sigma * noise / noise.std()
    ph = CTPhantom(np.clip(hu, -1024, 3071).astype(np.float32), lab, sp, ph.affine, [])
    image = ph.to_images()[0]
    out = []
    for c, dia, kind, inc in findings:
        world = ph.affine[:3, :3] @ c + ph.affine[:3, 3]
        out.append(Finding(tuple(float(v) for v in world), float(dia), kind, inc))  # type: ignore[arg-type]
    return DetectionCase(image, out)
