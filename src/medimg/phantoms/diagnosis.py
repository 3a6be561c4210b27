"""Synthetic diagnosis cases whose label hangs on a small, localised finding (seeded).

Three kinds, all with the lesion's box as ground truth for explanations:

- ``xray``: a chest radiograph computed as a projection. Body, lungs, heart, spine and ribs
  are ellipsoids/tubes whose line integrals are analytic; the log image ``-log(I / I0)`` after
  Poisson counting at ``I0`` and detector blur. Positive: a lung nodule or small mass (a
  sphere of partial density), 24-40 mm across by default, behind ribs and vessel texture. At
  the 64 px default (5.9 mm pixels) smaller nodules (16-30 mm, the first version) are ~3 px
  wide with the contrast of a rib and took ~1000 steps to be found at all; see ``radius_mm``.
- ``ctpet``: an axial thorax slice as co-registered CT (HU) and PET (SUV, 7 mm FWHM blur,
  Poisson-like noise). Positive: a PET-avid solid nodule. Negatives are a mix of nothing, a
  benign (non-avid) nodule and an avid focus without a nodule (inflammation), so each modality
  alone is ambiguous and the evidence is complementary: fusion is what separates the classes.
- ``ct3d``: a CT volume of axial slices (vessels run through the slices, a nodule spans only a
  few); the case label says whether a nodule is present, ``instance_labels`` which slices
  show it (for multiple-instance learning and its attention check).

Hand-written rather than built on :func:`medimg.phantoms.ct.body_phantom`, which paints rich
anatomy at ~1 s a slice; training sets here need thousands of cases in seconds. Arrays are
in our channel-first image layout ``(X, Y[, Z])``: ``i`` runs to the patient's left (image
right), ``j`` down the image (inferior for the radiograph, posterior for axial slices).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from medimg.errors import InputError
from medimg.io.image import Image

__all__ = ["KINDS", "MODALITIES", "DiagnosisCase", "iter_cases", "make_case", "make_cases"]

KINDS = ("xray", "ctpet", "ct3d")
#: Modalities of each kind, in channel order.
MODALITIES = {"xray": ("DX",), "ctpet": ("CT", "PT"), "ct3d": ("CT",)}
_MU = {"tissue": 0.020, "lung": 0.005, "bone": 0.042}  # linear attenuation /mm at ~70 keV


@dataclass
class DiagnosisCase:
    """One case: ``images`` per modality ``(X, Y[, Z])`` float32, the case ``label`` (0/1), the
    lesion ``boxes`` as half-open voxel ranges ``(i0, j0[, k0], i1, j1[, k1])`` of the finding
    that makes the case positive, ``instance_labels`` per slice (``ct3d``), ``spacing`` mm."""

    kind: str
    images: dict[str, np.ndarray]
    label: int
    boxes: list[tuple[int, ...]]
    spacing: tuple[float, ...]
    instance_labels: np.ndarray | None = None
    finding: str = "none"
    meta: dict[str, float] = field(default_factory=dict)

    def to_images(self) -> dict[str, Image]:
        """Each modality as an :class:`Image` ``(1, X, Y[, Z])`` with its RAS+ affine."""
        d = self.spacing
        a = np.eye(4)
        if self.kind == "xray":  # columns to patient's left, rows inferior, normal anterior
            a[:3, :3] = [[-d[0], 0, 0], [0, 0, 1.0], [0, -d[1], 0]]
        else:  # axial: columns to the left, rows posterior, slices inferior
            a[:3, :3] = np.diag([-d[0], -d[1], -(d[2] if len(d) > 2 else 5.0)])
        return {m: Image(x[None].astype(np.float32), a, modality=m) for m, x in self.images.items()}


class _Grid:
    """Millimetre coordinates of a square field: ``u`` to the patient's left, ``w`` down."""

    def __init__(self, size: int, fov_mm: float) -> None:
        self.d = fov_mm / size
        c = (np.arange(size) - (size - 1) / 2) * self.d
        self.u, self.w = np.meshgrid(c, c, indexing="ij")  # (X, Y)

    def box(self, u0: float, w0: float, r: float) -> tuple[int, int, int, int]:
        n = self.u.shape[0]
        lo = [int(np.floor((c - r) / self.d + (n - 1) / 2)) for c in (u0, w0)]
        hi = [int(np.ceil((c + r) / self.d + (n - 1) / 2)) + 1 for c in (u0, w0)]
        return (max(lo[0], 0), max(lo[1], 0), min(hi[0], n), min(hi[1], n))


def _chord(g: _Grid, u0: float, w0: float, a: float, b: float, c: float) -> np.ndarray:
    """Path length (mm) through an ellipsoid with semi-axes (a, b, c) along the depth axis."""
    q = 1.0 - ((g.u - u0) / a) ** 2 - ((g.w - w0) / b) ** 2
    return 2.0 * c * np.sqrt(np.clip(q, 0.0, None))


def _texture(rng: np.random.Generator, shape: tuple[int, ...], sigma_px: float) -> np.ndarray:
    t = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_px)
    return t / (t.std() + 1e-12)


def _lung_point(rng: np.random.Generator, lungs: list[tuple], margin: float) -> tuple[float, float]:
    """A point inside a random lung ellipse, ``margin`` mm from its border."""
    u0, w0, a, b = lungs[rng.integers(len(lungs))][:4]
    rho, phi = np.sqrt(rng.uniform(0, 1)), rng.uniform(0, 2 * np.pi)
    return u0 + rho * (a - margin) * np.cos(phi), w0 + rho * (b - margin) * np.sin(phi)


def xray_case(
    seed: int,
    positive: bool,
    size: int = 64,
    i0: float = 4e4,
    radius_mm: tuple[float, float] = (12.0, 20.0),
    density: tuple[float, float] = (1.5, 2.5),
) -> DiagnosisCase:
    """A PA chest radiograph ``(X, Y)`` as line integrals; positive cases hold one nodule of
    radius in ``radius_mm`` and attenuation ``density`` x (soft tissue - lung)."""
    rng = np.random.default_rng(seed)
    g = _Grid(size, 380.0)
    body_a, body_c = rng.uniform(150, 175), rng.uniform(100, 125)
    path = 2 * body_c * np.sqrt(np.clip(1 - (g.u / body_a) ** 2, 0, None)) * _MU["tissue"]
    lungs = []
    for side in (-1, 1):
        lu = side * rng.uniform(65, 80)
        lung = (lu, rng.uniform(-35, -15), rng.uniform(50, 62), rng.uniform(95, 115))
        lungs.append(lung)
        air = _chord(g, *lung, rng.uniform(65, 85))
        if side > 0:  # the heart sits in front of the left lung
            air = np.clip(air - _chord(g, 25, 45, 65, 55, 60), 0, None)
        vessels = 1 + 0.03 * _texture(rng, g.u.shape, 1.0)  # vessel/airway texture in the lung
        path -= air * (_MU["tissue"] - _MU["lung"]) * vessels
    spine = 36 * np.sqrt(np.clip(1 - (g.u / 18) ** 2, 0, None))
    path += spine * (_MU["bone"] - _MU["tissue"])
    for side in (-1, 1):  # ribs: curved bands sloping down laterally
        for k in range(9):
            wk = -135 + 24 * k + rng.normal(0, 2)
            wr = wk + 0.22 * np.abs(g.u) + 0.0015 * g.u**2
            on = (side * g.u > 15) & (np.abs(g.u) < body_a * 0.92)
            path += on * 15.0 * (_MU["bone"] - _MU["tissue"]) * np.exp(-(((g.w - wr) / 5.5) ** 2))
    boxes, meta = [], {}
    if positive:
        r = rng.uniform(*radius_mm)
        u0, w0 = _lung_point(rng, lungs, r + 6)
        rho = rng.uniform(*density)
        ball = _chord(g, u0, w0, r, r, r)
        path += ball * rho * (_MU["tissue"] - _MU["lung"])
        boxes.append(g.box(u0, w0, r))
        meta = {"radius_mm": r, "density": rho}
    counts = rng.poisson(i0 * np.exp(-path)).astype(np.float64)
    image = -np.log(np.maximum(counts, 1.0) / i0)
    image = ndimage.gaussian_filter(image, 0.6)  # detector blur
    return DiagnosisCase("xray", {"DX": image.astype(np.float32)}, int(positive), boxes,
                         (g.d, g.d), finding="nodule" if positive else "none", meta=meta)  # fmt: skip


class _AxialAnatomy:
    """Thorax parameters drawn once per case; :meth:`paint` gives the CT slice at height z."""

    def __init__(self, rng: np.random.Generator, g: _Grid) -> None:
        self.g, self.rng = g, rng
        self.body = (rng.uniform(140, 165), rng.uniform(95, 115))
        self.lungs = [(s * rng.uniform(62, 75), rng.uniform(-5, 10), rng.uniform(42, 55),
                       rng.uniform(60, 75)) for s in (-1, 1)]  # fmt: skip
        n = rng.integers(10, 18)  # vessels: tubes running through the slices
        self.vessels = [(*_lung_point(rng, self.lungs, 8), rng.uniform(1.5, 4.5),
                         rng.normal(0, 0.3, 2)) for _ in range(n)]  # fmt: skip

    def lungs_at(self, z: float) -> list[tuple]:
        s = np.sqrt(max(1.0 - (z / 90.0) ** 2, 0.15))  # lungs narrow towards apex and base
        return [(u, w, a * s, b * s) for u, w, a, b in self.lungs]

    def paint(self, z: float, tex: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(hu, lung_mask)`` of the slice at ``z`` mm from the mid-thorax."""
        g = self.g
        a, b = self.body
        inside = (g.u / a) ** 2 + (g.w / b) ** 2 <= 1
        fat = inside & ((g.u / (a - 12)) ** 2 + (g.w / (b - 12)) ** 2 > 1)
        hu = np.where(inside, 45.0, -1000.0) + inside * 8 * tex
        hu[fat] = -100 + 8 * tex[fat]
        lung = np.zeros(g.u.shape, bool)
        for u0, w0, la, lb in self.lungs_at(z):
            lung |= ((g.u - u0) / la) ** 2 + ((g.w - w0) / lb) ** 2 <= 1
        hu[lung] = -850 + 25 * tex[lung]
        for u0, w0, r, slope in self.vessels:
            uu, ww = u0 + slope[0] * z, w0 + slope[1] * z
            hu[lung & ((g.u - uu) ** 2 + (g.w - ww) ** 2 <= r**2)] = 40.0
        spine = (g.u**2 + (g.w - b + 35) ** 2) <= 16**2
        hu[spine] = 650.0
        return hu, lung


def _nodule(
    rng: np.random.Generator, anat: _AxialAnatomy, z0: float, radius: tuple[float, float]
) -> tuple[float, float, float]:
    r = rng.uniform(*radius)
    u0, w0 = _lung_point(rng, anat.lungs_at(z0), r + 4)
    return u0, w0, r


def ctpet_case(seed: int, positive: bool, size: int = 64) -> DiagnosisCase:
    """Co-registered CT (HU) and PET (SUV) axial slices ``(X, Y)``; see the module doc."""
    rng = np.random.default_rng(seed)
    g = _Grid(size, 360.0)
    anat = _AxialAnatomy(rng, g)
    hu, lung = anat.paint(0.0, _texture(rng, g.u.shape, 0.8))
    finding = "avid_nodule" if positive else ("none", "benign_nodule", "avid_focus")[seed % 3]
    boxes = []
    suv = np.where(hu > -500, 1.0, 0.05)
    suv[lung] = 0.35
    suv[(g.u - 20) ** 2 / 45**2 + (g.w + 5) ** 2 / 40**2 <= 1] = 2.2  # blood pool (heart)
    if finding in ("avid_nodule", "benign_nodule"):
        u0, w0, r = _nodule(rng, anat, 0.0, (6.0, 12.0))
        ball = (g.u - u0) ** 2 + (g.w - w0) ** 2 <= r**2
        hu[ball] = 35 + 10 * rng.standard_normal(ball.sum())
        if finding == "avid_nodule":
            suv[ball] = rng.uniform(3.5, 7.0)
            boxes.append(g.box(u0, w0, r))
    if finding == "avid_focus":  # inflammation: uptake without a solid nodule
        u0, w0, r = _nodule(rng, anat, 0.0, (6.0, 12.0))
        suv[(g.u - u0) ** 2 + (g.w - w0) ** 2 <= r**2] = rng.uniform(3.5, 7.0)
    hu = ndimage.gaussian_filter(hu, 0.5) + rng.normal(0, 20, hu.shape)
    pet = ndimage.gaussian_filter(suv, 7.0 / 2.355 / g.d)  # 7 mm FWHM scanner resolution
    pet = rng.poisson(np.clip(pet, 0, None) * 40.0) / 40.0  # counting noise
    pet = ndimage.gaussian_filter(pet, 0.6)
    images = {"CT": hu.astype(np.float32), "PT": pet.astype(np.float32)}
    return DiagnosisCase("ctpet", images, int(positive), boxes, (g.d, g.d, 5.0), finding=finding)


def ct3d_case(seed: int, positive: bool, size: int = 48, slices: int = 12) -> DiagnosisCase:
    """A CT volume ``(X, Y, Z)`` of 5 mm axial slices; positive: one nodule spanning a few."""
    rng = np.random.default_rng(seed)
    g = _Grid(size, 360.0)
    dz = 5.0
    anat = _AxialAnatomy(rng, g)
    zs = (np.arange(slices) - (slices - 1) / 2) * dz
    tex = _texture(rng, (*g.u.shape, slices), 0.8)
    vol = np.stack([anat.paint(float(z), tex[..., k])[0] for k, z in enumerate(zs)], axis=-1)
    inst = np.zeros(slices, np.int64)
    boxes = []
    if positive:
        k0 = rng.integers(1, slices - 1)
        u0, w0, r = _nodule(rng, anat, float(zs[k0]), (8.0, 14.0))
        z0 = zs[k0] + rng.uniform(-2, 2)
        for k, z in enumerate(zs):
            rr2 = r**2 - (z - z0) ** 2
            if rr2 > (0.5 * r) ** 2:  # the slice cuts a visible disc
                disc = (g.u - u0) ** 2 + (g.w - w0) ** 2 <= rr2
                vol[..., k][disc] = 35.0
                inst[k] = 1
        ks = np.nonzero(inst)[0]
        box2 = g.box(u0, w0, r)
        boxes.append((box2[0], box2[1], int(ks[0]), box2[2], box2[3], int(ks[-1]) + 1))
    vol = ndimage.gaussian_filter(vol, (0.5, 0.5, 0)) + rng.normal(0, 20, vol.shape)
    return DiagnosisCase("ct3d", {"CT": vol.astype(np.float32)}, int(positive), boxes,
                         (g.d, g.d, dz), instance_labels=inst,
                         finding="nodule" if positive else "none")  # fmt: skip


def _voxels(kind: str, size: int | None, params: dict) -> int:
    """Voxels of one case's images (all modalities) before it is made."""
    side = int(size) if size is not None else (48 if kind == "ct3d" else 64)
    depth = {"xray": 1, "ctpet": 2, "ct3d": int(params.get("slices", 12))}[kind]  # type: ignore[call-overload]
    return side * side * max(depth, 1)


def make_case(
    kind: str, seed: int, positive: bool, size: int | None = None, **params: object
) -> DiagnosisCase:
    """One case of ``kind`` (see :data:`KINDS`); ``size`` in pixels per side (default per kind);
    ``params`` go to the kind's maker (e.g. ``radius_mm=(8, 15)`` for :func:`xray_case`)."""
    from medimg.io.inputs import check_allocation

    makers = {"xray": xray_case, "ctpet": ctpet_case, "ct3d": ct3d_case}
    if kind not in makers:
        raise InputError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if size is not None and int(size) < 8:
        raise InputError(f"size {size} is too small for a {kind} phantom; give at least 8 pixels")
    # the makers hold about a dozen float64 working arrays of the image's size
    check_allocation((_voxels(kind, size, params),), np.float64, copies=12,
                     what=f"a {kind} phantom")  # fmt: skip
    kwargs = {} if size is None else {"size": int(size)}
    return makers[kind](seed, positive, **kwargs, **params)  # type: ignore[operator]


def iter_cases(
    kind: str,
    n: int,
    seed: int = 0,
    prevalence: float = 0.5,
    size: int | None = None,
    **params: object,
) -> Iterator[DiagnosisCase]:
    """The cases of :func:`make_cases`, one at a time (a large set written to disk never has to
    fit in memory)."""
    if n < 1 or not 0 <= prevalence <= 1:
        raise InputError(f"need n >= 1 and prevalence in [0, 1], got n={n}, {prevalence}")
    labels = np.zeros(n, bool)
    labels[: round(n * prevalence)] = True
    labels = np.random.default_rng(seed).permutation(labels)
    for t, y in enumerate(labels):
        yield make_case(kind, seed * 100003 + t, bool(y), size, **params)


def make_cases(
    kind: str,
    n: int,
    seed: int = 0,
    prevalence: float = 0.5,
    size: int | None = None,
    **params: object,
) -> list[DiagnosisCase]:
    """``n`` cases with ``round(n * prevalence)`` positives, in a seeded shuffled order; case
    ``t`` uses seed ``seed * 100003 + t`` so sets with different seeds never share a case.
    The set must fit in memory (checked before anything is made)."""
    from medimg.io.inputs import check_allocation

    if n >= 1 and kind in KINDS:
        check_allocation((n, _voxels(kind, size, params)), np.float32,
                         what=f"a set of {n} {kind} cases")  # fmt: skip
    return list(iter_cases(kind, n, seed, prevalence, size, **params))
