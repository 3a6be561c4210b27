"""Chest radiographs projected from a 3D thorax, with nodules of real density (seeded).

The thorax is the detection task's CT phantom (:func:`medimg.phantoms.detection.nodule_ct_case`,
built on :func:`medimg.phantoms.ct.body_phantom`: ribs, spine, sternum, lungs with vessel trees
and airways, heart, aorta, diaphragm domes with liver, spleen, stomach and bowel below), taken
tall enough for a chest film (from above the lung apices to below the domes) and without its
own nodules. This module adds what a radiograph shows and a CT slab need not: ribs as
continuous curved bands (the CT phantom's ribs are axial cross-sections that project as dots),
the neck and shoulders (deltoid/trapezius soft tissue, humeral heads), clavicles, scapulae and,
for some patients, breasts. The volume is projected with :mod:`medimg.physics.xray` (60 keV effective
energy, PA or AP cone beam at 180 / 100 cm, scatter, detector blur, Poisson noise, log image).

Nodules are added to the line integrals before exposure (line integrals add, so this equals
painting them into the volume at the magnification of the centre plane): solid, part-solid or
calcified, 6-30 mm, anywhere the lungs project (behind the heart, ribs and domes included).

A film takes ~10-20 CPU s at 3 mm voxels (the CT phantom paints every slice, then two
projections). For training sets, :func:`thorax_projection` gives the noise-free line integrals
of one patient, which :mod:`medimg.tasks.diagnose.chest_films` caches and exposes many times.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from medimg.errors import InputError
from medimg.io.image import Image
from medimg.physics.xray import Geometry, expose, hu_to_mu, log_image, nodule_line_integral
from medimg.physics.xray import project as project_volume

__all__ = ["ChestRadiograph", "NoduleSpec", "ThoraxProjection", "chest_radiograph",
           "thorax_projection", "thorax_volume"]  # fmt: skip


@dataclass(frozen=True)
class NoduleSpec:
    """A nodule on the film: centre ``(u, v)`` pixels, diameter (mm, in the patient), kind."""

    center: tuple[float, float]
    diameter_mm: float
    kind: str = "solid"


@dataclass
class ChestRadiograph:
    """``log`` ``(U, V)`` float32 (``-log(I/I0)``, dense = high), ``lung`` mask ``(U, V)`` of
    pixels whose rays cross at least 20 mm of lung, ``pixel_mm`` at the detector."""

    log: np.ndarray
    lung: np.ndarray
    pixel_mm: float
    view: str
    nodules: list[NoduleSpec] = field(default_factory=list)
    meta: dict[str, float] = field(default_factory=dict)

    def to_image(self) -> Image:
        """An :class:`Image` ``(1, U, V)``: columns to the patient's left, rows inferior."""
        a = np.eye(4)
        d = self.pixel_mm
        a[:3, :3] = [[-d, 0, 0], [0, 0, 1.0], [0, -d, 0]]
        return Image(self.log[None].astype(np.float32), a, modality="DX")


def _capsule(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance (mm) of points ``p`` ``(..., 3)`` from the segment ``a``-``b``."""
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0, 1)
    return np.linalg.norm(p - (a + t[..., None] * ab), axis=-1)


def _tube(hu: np.ndarray, uvz: np.ndarray, points: np.ndarray, layers: tuple) -> None:
    """Paint a tube along ``points`` ``(n, 3)`` (mm, the ``uvz`` frame): ``layers`` of
    ``(radius, HU)`` from the outside in; each segment touches only its bounding box."""
    axes = [uvz[:, 0, 0, 0], uvz[0, :, 0, 1], uvz[0, 0, :, 2]]
    r_out = layers[0][0]
    for a, b in itertools.pairwise(points):
        box = []
        for k, ax in enumerate(axes):
            lo, hi = min(a[k], b[k]) - r_out, max(a[k], b[k]) + r_out
            idx = np.nonzero((ax >= lo) & (ax <= hi))[0]
            if not idx.size:
                break
            box.append(slice(idx[0], idx[-1] + 1))
        else:
            dist = _capsule(uvz[tuple(box)], a, b)
            local = hu[tuple(box)]
            for radius, value in layers:
                local[dist <= radius] = value


def _ribs(hu: np.ndarray, uvz: np.ndarray, a_half: float, b_half: float,
          rng: np.random.Generator) -> None:  # fmt: skip
    """Twelve pairs of ribs as curved tubes: from the spine around the chest wall, descending
    about 9 cm to their anterior ends (the CT phantom paints ribs only as axial cross-sections,
    which project as dots rather than the bands a chest film shows)."""
    for s in (-1, 1):
        fall = rng.uniform(75, 95)  # one slope per side: neighbouring ribs never cross
        for k in range(11):
            z0 = 12.0 + 23.0 * k + rng.normal(0, 1.5)
            shrink = float(np.clip(0.45 + 0.55 * z0 / 90, 0.45, 1.0))  # upper ribs: tight arcs
            ru, rv = (a_half - 22) * shrink, b_half - 20
            phi = np.linspace(0.12, 0.8 * np.pi, 40)
            drop = (fall + rng.uniform(-3, 3)) * (phi / phi[-1]) ** 1.5
            pts = np.stack([s * ru * np.sin(phi), 0.05 * b_half + rv * np.cos(phi), z0 + drop], 1)
            _tube(hu, uvz, pts, ((4.5, 650.0), (2.5, 220.0)))


def _add_anatomy(hu: np.ndarray, uvz: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    """Neck, shoulders, clavicles, scapulae and breasts painted into ``hu`` ``(X, Y, Z)``;
    ``uvz``: per voxel (mm to the patient's left, mm posterior, mm below the lung apex)."""
    u, v, z = uvz[..., 0], uvz[..., 1], uvz[..., 2]
    body = ndimage.binary_fill_holes(hu > -400, structure=np.ones((3, 3, 1)))
    mid = body[..., np.argmin(np.abs(z[0, 0] - 150))]
    cols = np.nonzero(mid.any(1))[0]
    a_half = 0.5 * (cols[-1] - cols[0] + 1) * abs(u[1, 0, 0] - u[0, 0, 0]) if cols.size else 150
    rows = np.nonzero(mid.any(0))[0]
    b_half = 0.5 * (rows[-1] - rows[0] + 1) * abs(v[0, 1, 0] - v[0, 0, 0]) if rows.size else 110
    _ribs(hu, uvz, a_half, b_half, rng)
    # the neck: above the shoulders only a cylinder of soft tissue remains
    neck = (u**2 + (v - 10) ** 2) <= 55**2
    hu[(z < -25) & ~neck] = -1000.0
    hu[(z < -25) & neck & (hu < -200)] = 40.0
    for s in (-1, 1):
        sh_u = s * (a_half + rng.uniform(0, 20))
        shoulder = ((u - sh_u) / 65) ** 2 + ((v - 5) / 60) ** 2 + ((z - 5) / 55) ** 2 <= 1
        hu[shoulder & (hu < 0)] = 45.0  # deltoid and trapezius
        r2 = (u - sh_u) ** 2 + (v - 5) ** 2 + (z - 15) ** 2
        hu[r2 <= 24**2] = 750.0  # humeral head: cortex around cancellous bone
        hu[r2 <= 20**2] = 300.0
        medial = np.array([s * 22.0, -b_half + 18, rng.uniform(-8, 4)])
        lateral = np.array([s * (a_half - 10), -10.0, rng.uniform(-30, -15)])
        dist = _capsule(uvz, medial, lateral)
        hu[dist <= 7.0] = 800.0  # clavicle: cortex around marrow
        hu[dist <= 4.0] = 250.0
        # scapula: a 5 mm plate on the posterior wall, a triangle from the shoulder down
        zt = np.clip((z - 5) / 140, 0, 1)
        lat = a_half * (0.85 - 0.35 * zt)
        med = a_half * 0.35
        plate = (np.abs(v - (0.78 * b_half + 0.02 * (s * u - med))) <= 2.5) & (z > 5) & (z < 145)
        hu[plate & (s * u >= med) & (s * u <= lat) & (hu < 300)] = 550.0
    breasts = rng.random() < 0.4
    if breasts:  # flattened against the detector: wide, shallow soft tissue over the bases
        size = rng.uniform(30, 55)
        for s in (-1, 1):
            c = (s * 0.45 * a_half, -b_half, rng.uniform(165, 195))
            e = ((u - c[0]) / (1.4 * size)) ** 2 + ((v - c[1]) / (0.6 * size)) ** 2
            e = e + ((z - c[2]) / size) ** 2
            hu[(e <= 1) & (hu < -200)] = rng.uniform(-60, 20)  # fat and glandular tissue
    return {"half_width_mm": float(a_half), "half_depth_mm": float(b_half),
            "breasts": float(breasts)}  # fmt: skip


def thorax_volume(
    seed: int, voxel_mm: float = 3.0, height_mm: float = 380.0, width_mm: float = 440.0
) -> tuple[np.ndarray, tuple[float, float, float], dict[str, float]]:
    """HU ``(X, Y, Z)`` in RAS+ index order, spacing, and the patient's measurements: the
    detection thorax without nodules, plus the anatomy of :func:`_add_anatomy`."""
    from medimg.phantoms.detection import nodule_ct_case

    if voxel_mm <= 0 or height_mm < 100 or width_mm < 300:
        raise InputError(f"need voxel_mm > 0, height_mm >= 100, width_mm >= 300, got "
                         f"{voxel_mm}, {height_mm}, {width_mm}")  # fmt: skip
    n_xy, n_z = round(width_mm / voxel_mm), round(height_mm / voxel_mm)
    case = nodule_ct_case(seed, shape=(n_xy, n_xy, n_z), spacing=(voxel_mm, voxel_mm, voxel_mm),
                          n_nodules=(0, 0), n_juxtapleural=(0, 0), n_calcifications=(1, 3),
                          noise_hu=(0.0, 0.0))  # fmt: skip
    img = case.image.canonical()
    hu = img.array[0].astype(np.float64)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in hu.shape], indexing="ij"), -1)
    world = idx @ img.affine[:3, :3].T + img.affine[:3, 3]
    # the CT phantom's frame: u to the left = -x, v posterior = -y, depth below the apex = -z
    uvz = np.stack([-world[..., 0], -world[..., 1], -world[..., 2]], -1)
    uvz[..., 0] -= uvz[..., 0].mean()
    uvz[..., 1] -= uvz[..., 1].mean()
    meta = _add_anatomy(hu, uvz, np.random.default_rng([seed, 31]))
    meta["top_depth_mm"] = float(uvz[..., 2].min())
    return hu.astype(np.float32), (voxel_mm,) * 3, meta  # type: ignore[return-value]


@dataclass
class ThoraxProjection:
    """The noise-free line integrals ``p`` ``(U, V)`` of thorax ``seed`` (no nodules, no
    scatter), ``lung_mm`` ``(U, V)``: the length of lung each ray crosses, ``pixel_mm`` at the
    detector, ``view`` and the centre plane's ``magnification``. Exposure (scatter, blur,
    noise, log) and nodules can be applied to it any number of times: it is the expensive part
    of a film, worth caching."""

    p: np.ndarray
    lung_mm: np.ndarray
    pixel_mm: float
    view: str
    magnification: float
    meta: dict[str, float] = field(default_factory=dict)


def thorax_projection(
    seed: int, size: int = 512, *, view: str = "PA", voxel_mm: float = 3.0, fov_mm: float = 420.0
) -> ThoraxProjection:
    """Project thorax ``seed`` (:func:`thorax_volume`) onto a ``size`` x ``size`` detector
    covering ``fov_mm``: PA at 180 cm, AP at 100 cm source-to-detector, the chest against the
    detector."""
    if size < 16 or view not in ("PA", "AP"):
        raise InputError(f"need size >= 16 and view PA or AP, got {size}, {view!r}")
    hu, spacing, meta = thorax_volume(seed, voxel_mm)
    sid = 1800.0 if view == "PA" else 1000.0
    sod = sid - (meta["half_depth_mm"] + 40.0)  # the chest against the detector
    pixel = fov_mm / size
    geom = Geometry(view=view, beam="cone", sid_mm=sid, sod_mm=sod,  # type: ignore[arg-type]
                    detector_shape=(size, size), pixel_mm=(pixel, pixel))  # fmt: skip
    p = project_volume(hu_to_mu(torch.from_numpy(hu)), spacing, geom).numpy()
    body = ndimage.binary_fill_holes(hu > -400, structure=np.ones((3, 3, 1)))
    lung_mm = project_volume(torch.from_numpy((body & (hu < -400)).astype(np.float32)),
                             spacing, geom).numpy()  # fmt: skip
    return ThoraxProjection(p.astype(np.float32), lung_mm.astype(np.float32), pixel, view,
                            sid / sod, meta)  # fmt: skip


def chest_radiograph(
    seed: int,
    size: int = 512,
    *,
    view: str = "PA",
    nodules: int | list[NoduleSpec] = 0,
    diameter_mm: tuple[float, float] = (6.0, 30.0),
    kinds: tuple[str, ...] = ("solid", "solid", "part_solid", "calcified"),
    voxel_mm: float = 3.0,
    fov_mm: float = 420.0,
    noise: bool = True,
) -> ChestRadiograph:
    """A ``size`` x ``size`` chest radiograph (default 512^2, ``fov_mm`` at the detector) of
    thorax ``seed``; ``nodules``: a count drawn at random lung positions (diameters
    log-uniform in ``diameter_mm``, kinds from ``kinds``) or explicit specs."""
    if size < 16 or view not in ("PA", "AP"):
        raise InputError(f"need size >= 16 and view PA or AP, got {size}, {view!r}")
    rng = np.random.default_rng([seed, 53])
    proj = thorax_projection(seed, size, view=view, voxel_mm=voxel_mm, fov_mm=fov_mm)
    p, lung_mm, pixel, meta = torch.from_numpy(proj.p), proj.lung_mm, proj.pixel_mm, proj.meta
    lung = lung_mm > 20.0
    specs = list(nodules) if isinstance(nodules, list) else []
    for _ in range(nodules if isinstance(nodules, int) else 0):
        dia = float(np.exp(rng.uniform(*np.log(diameter_mm))))
        room = np.argwhere(lung_mm > dia + 10.0)
        if not len(room):
            continue
        c = room[rng.integers(len(room))]
        specs.append(NoduleSpec((float(c[0]), float(c[1])), dia, str(rng.choice(kinds))))
    mag = proj.magnification
    for n in specs:  # at the magnification of the centre plane
        p = p + nodule_line_integral(p.shape, (pixel, pixel), n.center, n.diameter_mm * mag,
                                     n.kind, axes_ratio=(1.0, 1.0, 1.0 / mag))  # fmt: skip
    gen = torch.Generator().manual_seed(int(seed))
    i0 = float(rng.uniform(5e3, 3e4))
    counts = expose(p, (pixel, pixel), i0=i0, scatter_fraction=float(rng.uniform(0.2, 0.45)),
                    scatter_sigma_mm=float(rng.uniform(30, 60)),
                    blur_sigma_mm=float(rng.uniform(0.3, 0.7)),
                    noise="poisson" if noise else "none", generator=gen)  # fmt: skip
    out = log_image(counts, i0).numpy().astype(np.float32)
    meta.update({"i0": i0, "magnification": mag})
    return ChestRadiograph(out, lung, pixel, view, specs, meta)
