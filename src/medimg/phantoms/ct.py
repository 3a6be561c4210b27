"""CT phantoms in Hounsfield units with label maps and nodules (seeded, deterministic).

:func:`shepp_logan_hu`: scikit-image's Shepp-Logan in HU. :func:`body_phantom`: analytic 3D
anatomy painted into 2D slices or 3D volumes: body outline, fat with septa, muscles, vertebrae,
ribs, sternum, lungs (gravity gradient, branching vessel trees cut into dots and streaks,
airways), heart, aortas, IVC, liver, spleen, stomach, kidneys, bowel, and lung nodules (solid or
ground-glass, lobulated, 3-30 mm); partial-volume edges; 1 mm and 4 mm correlated textures.
Frame: ``u`` mm to the patient's left (image right), ``v`` mm posterior (image down), ``z`` mm
down from the lung apex; arrays ``(H, W)``/``(Z, H, W)`` in display orientation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from skimage import data, transform

from medimg.errors import InputError
from medimg.io.image import Image

__all__ = ["LABELS", "TISSUES", "CTPhantom", "Nodule", "body_phantom", "shepp_logan_hu"]

#: Label ids of the body phantoms (0 is the air outside the body).
LABELS = {0: "background", 1: "fat", 2: "muscle", 3: "lung", 4: "vessel", 5: "nodule",
          6: "bone", 7: "heart", 8: "liver", 9: "spleen", 10: "kidney", 11: "airway",
          12: "soft_tissue", 13: "bowel_content"}  # fmt: skip
_ID = {v: k for k, v in LABELS.items()}
#: Tissue -> (mean HU, std of 1 mm texture, std of 4 mm texture, label).
TISSUES = {
    "fat": (-100, 6, 8, "fat"), "muscle": (50, 6, 5, "muscle"), "lung": (-850, 18, 14, "lung"),
    "blood": (40, 6, 4, "vessel"), "heart": (40, 5, 4, "heart"), "liver": (60, 5, 6, "liver"),
    "spleen": (50, 5, 5, "spleen"), "kidney": (33, 5, 4, "kidney"), "cortex": (900, 30, 20, "bone"),
    "marrow": (230, 60, 30, "bone"), "rib": (700, 60, 30, "bone"), "disc": (80, 5, 5, "soft_tissue"),
    "soft": (38, 6, 4, "soft_tissue"), "air": (-1000, 4, 2, "airway"),
    "gas": (-950, 8, 6, "bowel_content"), "fluid": (15, 8, 6, "bowel_content"),
}  # fmt: skip
REGION_Z = {"thorax": 140.0, "abdomen": 320.0}  # slice height (mm below the lung apex)


@dataclass
class Nodule:
    """A lung nodule: centre in array indices and in RAS+ mm, mean diameter (mm), kind, HU."""

    center_voxel: tuple[int, ...]
    center_mm: tuple[float, float, float]
    diameter_mm: float
    kind: str
    hu: float


@dataclass
class CTPhantom:
    """``hu`` float32 and ``labels`` uint8 (ids in :data:`LABELS`), ``(H, W)`` or ``(Z, H, W)``;
    ``spacing`` mm per array axis; ``affine`` maps ``([slice,] row, col)`` to RAS+ mm."""

    hu: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray
    nodules: list[Nodule] = field(default_factory=list)

    def to_images(self) -> tuple[Image, Image]:
        """The HU image and the label map as :class:`~medimg.io.image.Image`, in the project's
        ``(C, X, Y[, Z])`` convention (reoriented to the closest RAS+; world positions kept)."""
        if self.hu.ndim == 2:  # (row, col) -> (col, row) = (X, Y)
            swap = self.affine[:, [1, 0, 2, 3]]
            hu = Image(self.hu.T[None], swap, modality="CT")
            return hu, Image(self.labels.T[None], swap, modality="SEG", is_label=True)
        hu = Image(self.hu[None], self.affine, modality="CT").canonical()
        labels = Image(self.labels[None], self.affine, modality="SEG", is_label=True)
        return hu, labels.canonical()


def shepp_logan_hu(size: int = 256) -> np.ndarray:
    """scikit-image's modified Shepp-Logan in HU, ``(size, size)`` float32: air -1000 outside,
    inside ``HU = 1250 (v - 0.2)`` (skull +1000, brain 0, ventricles -250)."""
    v = data.shepp_logan_phantom()
    hu = np.where(ndimage.binary_fill_holes(v > 0), 1250.0 * (v - 0.2), -1000.0)
    return transform.resize(hu, (size, size), order=1, anti_aliasing=True).astype(np.float32)


def _soft(f: np.ndarray, d: float) -> np.ndarray:
    """Partial-volume fraction of the set ``f < 0`` (``f / |grad f|`` ~ signed distance, mm)."""
    gy, gx = np.gradient(f, d)
    return np.clip(0.5 - f / np.maximum(np.hypot(gx, gy), 1e-6) / d, 0.0, 1.0)


def _ell(u, v, cu, cv, a, b, n=2.0):
    """Implicit superellipse: negative inside."""
    return (np.abs((u - cu) / a) ** n + np.abs((v - cv) / b) ** n) ** (1 / n) - 1


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross product of two 3-vectors: ``np.cross`` costs 10x more per call in the recursion."""
    return np.array(
        [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
    )


def _tree(rng, root, direction, radius, inside, depth=0) -> list[tuple]:
    """Bifurcating vessel tree as segments ``(p0, p1, radius)`` kept inside ``inside(p)``."""
    d = direction / np.linalg.norm(direction)
    end = root + d * radius * rng.uniform(5, 9)
    if not inside(end) or radius < 0.4 or depth > 10:
        return []
    axis = _cross(d, rng.standard_normal(3))
    axis /= np.linalg.norm(axis)
    segs = [(root, end, radius)]
    for sign in (1, -1):  # children turn to either side and thin out
        ang = sign * rng.uniform(0.3, 0.7)
        child = d * np.cos(ang) + _cross(axis, d) * np.sin(ang)
        segs += _tree(rng, end, child, radius * rng.uniform(0.7, 0.85), inside, depth + 1)
    return segs


def _capsules(u, v, z, segs: np.ndarray, d: float) -> np.ndarray:
    """Soft mask of 3D capsules (rows ``p0, p1, r``) cut at height ``z``, box by box."""
    out = np.zeros_like(u)
    zlo, zhi = np.minimum(segs[:, 2], segs[:, 5]), np.maximum(segs[:, 2], segs[:, 5])
    for s in segs[(zlo - segs[:, 6] <= z) & (zhi + segs[:, 6] >= z)]:
        p0, p1, r, origin = s[:3], s[3:6], s[6], np.array([u[0, 0], v[0, 0]])
        lo = np.maximum((np.minimum(p0, p1)[:2] - r - d - origin) / d, 0).astype(int)
        hi = np.maximum((np.maximum(p0, p1)[:2] + r + d - origin) / d + 2, 0).astype(int)
        box = np.s_[lo[1] : hi[1], lo[0] : hi[0]]
        q = np.dstack([u[box] - p0[0], v[box] - p0[1], np.full_like(u[box], z - p0[2])])
        t = np.clip(q @ (p1 - p0) / max((p1 - p0) @ (p1 - p0), 1e-9), 0, 1)
        dist = np.linalg.norm(q - t[..., None] * (p1 - p0), axis=-1)
        out[box] = np.maximum(out[box], np.clip(0.5 - (dist - r) / d, 0, 1))
    return out


class _Anatomy:
    """One random (seeded) body: sizes, organ table, vessel trees; painted slice by slice."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.A, self.B = 165 * rng.uniform(0.85, 1.12), 112 * rng.uniform(0.85, 1.1)
        self.fat, self.wall = rng.uniform(8, 24), rng.uniform(8, 14)
        ac, bc = self.ac, self.bc = self.A - self.fat - self.wall, self.B - self.fat - self.wall
        vsp = self.vsp = bc - 42  # vertebral body centre
        self.lungs = [(-0.5 * ac, 230.0), (0.52 * ac, 245.0)]  # centre u, base of the dome
        self.heart = ((0.12 * ac, -0.3 * bc, 150.0), (0.38 * ac, 0.52 * bc, 55.0))
        self.organs = [  # ellipsoids: tissue, centre (u, v, z), half axes (mm)
            ("liver", (-0.38 * ac, 0.0, 270.0), (0.58 * ac, 0.8 * bc, 90.0)),
            ("spleen", (0.55 * ac, 0.4 * bc, 265.0), (0.2 * ac, 0.4 * bc, 55.0)),
            ("soft", (0.3 * ac, -0.35 * bc, 255.0), (0.3 * ac, 0.3 * bc, 45.0)),  # stomach
            ("gas", (0.3 * ac, -0.48 * bc, 255.0), (0.22 * ac, 0.12 * bc, 25.0)),
            ("fat", self.heart[0], tuple(a + 4 for a in self.heart[1])),  # pericardial fat
            ("heart", *self.heart),
        ]
        for s in (-1, 1):  # kidneys with (medial) renal sinus fat
            c, sinus = (s * 0.42 * ac, vsp - 8, 335 - 8 * s), (s * 0.35 * ac, vsp - 8, 335 - 8 * s)
            self.organs += [("kidney", c, (28, 40, 55)), ("fat", sinus, (10, 16, 35))]
        segs = []
        for side, (cu, zb) in zip((-1, 1), self.lungs):
            hilum = np.array([side * 0.22 * ac, -0.02 * bc, 110.0])
            inside = lambda p, cu=cu, zb=zb: self.lung_f(*p, cu, zb) < -0.03  # noqa: E731
            for _ in range(7):
                d = rng.standard_normal(3) + np.array([1.2 * side, 0, 0])
                segs += _tree(rng, hilum, d, rng.uniform(3.5, 5.5), inside)
        self.trees = np.array([[*a, *b, r] for a, b, r in segs]).reshape(-1, 7)
        carina = [0, -0.1 * bc, 95.0]
        airway = [[0, -0.32 * bc + 20, -40, *carina, 9.0]]
        airway += [[*carina, s * 0.2 * ac, -0.05 * bc, 115, 6.0] for s in (-1, 1)]
        self.airways = np.array(airway)
        self.bowel = [(rng.uniform(-0.5, 0.6) * ac, rng.uniform(-0.6, 0.1) * bc,
                       rng.uniform(8, 18), rng.uniform(280, 420), rng.choice(["gas", "fluid"]))
                      for _ in range(14)]  # fmt: skip
        # descending and ascending aorta, IVC: u, v, radius, z range
        self.vessels = [(0.2 * ac, vsp - 22, 12, 60, 420), (-0.05 * ac, -0.3 * bc, 14, 70, 125),
                        (-0.2 * ac, vsp - 28, 11, 250, 420)]  # fmt: skip

    def lung_f(self, u, v, z, cu, zbase):
        """Implicit lung: elliptic section, rounded apex, diaphragm dome higher centrally."""
        grow = np.clip(z / 70, 0.05, 1) ** 0.5
        f = _ell(u, v, cu, 0.02 * self.bc, 0.42 * self.ac * grow, 0.8 * self.bc * grow)
        r2 = ((u - cu) / (0.42 * self.ac)) ** 2 + ((v - 0.3 * self.bc) / self.bc) ** 2
        dome = zbase - 45 * (1 - np.clip(r2, 0, 1))
        return np.maximum(f, np.maximum((z - dome) / 30, -z / 30))

    def layers(self, u, v, z, tex, d):
        """``(soft mask, tissue)`` pairs in painting order for the slice at height ``z``."""
        A, B, ac, bc, vsp = self.A, self.B, self.ac, self.bc, self.vsp
        ell = lambda cu, cv, a, b, n=2.0: _soft(_ell(u, v, cu, cv, a, b, n), d)  # noqa: E731

        def ellz(c, ax):  # cross-section of an ellipsoid
            k = 1 - ((z - c[2]) / ax[2]) ** 2
            return ell(c[0], c[1], ax[0] * k**0.5, ax[1] * k**0.5) if k > 0 else 0 * u

        fat_t = self.fat * (1.0 + 0.4 * np.clip(v / B, -1, 1))  # more fat at the back
        wall = _soft(_ell(u, v, 0, 0.05 * B, A, B, 2.4) + fat_t / A, d)
        out = [(ell(0, 0.05 * B, A, B, 2.4), "fat"), (wall, "muscle"),
               (ell(0, 0.05 * B, ac, bc, 2.4), "fat")]  # fmt: skip
        for s in (-1, 1):
            out.append((ell(s * 36, vsp + 40, 30, 24), "muscle"))  # erector spinae
            pectoral = wall * ell(s * 0.45 * A, -0.8 * B, 0.3 * A, 0.09 * B)  # under the fat
            out += [(pectoral, "muscle")] * (z < 200)
            out += [(ell(s * 38, vsp - 10, 18, 20), "muscle")] * (z > 330)  # psoas
        disc = (z % 32) < 7
        out += [(ell(0, vsp, 20, 18), "disc" if disc else "cortex"),
                (ell(0, vsp, 17.5, 15.5), "disc" if disc else "marrow"),
                (ell(0, vsp + 31, 16, 14), "cortex"), (ell(0, vsp + 52, 5, 20), "cortex"),
                (ell(0, vsp + 30, 9, 8), "soft")]  # fmt: skip
        if 20 < z < 270:  # ribs cut obliquely: bands that move with z
            for k, phi in enumerate(np.linspace(-2.5, 2.5, 12)):
                if (z + 9 * k) % 26 < 11:
                    cu, cv = (ac + 4) * np.sin(phi), 0.05 * B - (bc + 4) * np.cos(phi)
                    out += [(ell(cu, cv, 7, 5), "cortex"), (ell(cu, cv, 4.5, 2.8), "rib")]
            out += [(ell(0, -bc - 2, 16, 6), "rib")] * (z < 220)  # sternum
        out += [(ellz(c, ax), tissue) for tissue, c, ax in self.organs]
        for cu, cv, r, zc, content in self.bowel:
            if abs(z - zc) < 2 * r:
                out += [(ell(cu, cv, r, r), "soft"), (ell(cu, cv, r - 2.5, r - 2.5), content)]
        for cu, cv, r, z0, z1 in self.vessels:
            if z0 < z < z1:  # with a fat plane around
                out += [(ell(cu, cv, r + 2, r + 2), "fat"), (ell(cu, cv, r, r), "blood")]
        lung = sum(_soft(self.lung_f(u, v, z, cu, zb), d) for cu, zb in self.lungs)
        heart = ellz(self.heart[0], np.add(self.heart[1], 6))
        lung = np.clip(lung, 0, 1) * (1 - heart) * (np.abs(u) > 28)  # mediastinum
        out += [(lung, "lung"), (_capsules(u, v, z, self.trees, d) * lung, "blood")]
        inner = self.airways - np.r_[np.zeros(6), 2.0]  # lumen inside a 2 mm wall
        wall, lumen = (_capsules(u, v, z, a, d) for a in (self.airways, inner))
        return [*out, (wall, "soft"), (lumen, "air")]

    def paint(self, u, v, z, tex, d) -> tuple[np.ndarray, np.ndarray]:
        """HU and labels of one slice: layers blended by their partial-volume fractions."""
        hu, lab = np.full(u.shape, -1000.0), np.zeros(u.shape, np.uint8)
        for m, tissue in self.layers(u, v, z, tex, d):
            mean, s1, s2, label = TISSUES[tissue]
            value = mean + s1 * tex[0] + s2 * tex[1]
            if tissue in ("fat", "lung"):  # fibrous septa; dependent lung is denser
                value += 60 * (np.abs(tex[2]) < 0.06 if tissue == "fat" else v / self.B)
            hu = hu * (1 - m) + m * value
            lab[m >= 0.5] = _ID[label]
        return hu, lab


def _add_nodules(rng, hu, lab, u, v, zs, spacing, n, dia_range, affine) -> list[Nodule]:
    """Spheres (lobulated in-plane) inside the lung, at least 2 mm from its boundary."""
    nodules, d = [], spacing[-1]
    for _ in range(n):
        edt = ndimage.distance_transform_edt(lab == _ID["lung"], sampling=spacing)
        dia = float(np.exp(rng.uniform(*np.log(dia_range))))
        while dia > dia_range[0] and not np.any(edt > dia / 2 + 2):
            dia = max(0.8 * dia, dia_range[0])
        if not np.any(room := edt > dia / 2 + 2):
            break
        c = np.argwhere(room)[rng.integers(np.count_nonzero(room))]
        kind = "solid" if rng.random() < 0.7 else "ground_glass"
        val = rng.uniform(10, 60) if kind == "solid" else rng.uniform(-650, -400)
        lob, k, ph = rng.uniform(0, 0.12), rng.integers(3, 6), rng.uniform(0, 2 * np.pi)
        cu, cv = u[c[-2], c[-1]], v[c[-2], c[-1]]
        rr = dia / 2 * (1 + lob * np.cos(k * np.arctan2(v - cv, u - cu) + ph))
        for i, z in enumerate(zs):
            dist = np.sqrt((u - cu) ** 2 + (v - cv) ** 2 + (z - zs[c[0]]) ** 2)
            m = np.clip(0.5 - (dist - rr) / d, 0, 1)
            grain = ndimage.gaussian_filter(rng.standard_normal(u.shape), 1.0 / d)
            hu[i] = hu[i] * (1 - m) + m * (val + 10 * grain / grain.std())
            lab[i][m >= 0.5] = _ID["nodule"]
        vox = c if len(zs) > 1 else c[1:]  # 2D: (row, col); its affine takes (row, col, 0)
        world = affine[:3, :3] @ np.r_[vox, 0][:3] + affine[:3, 3]
        nodules.append(Nodule(tuple(vox.tolist()), tuple(world.tolist()), dia, kind, float(val)))
    return nodules


def body_phantom(
    shape: tuple[int, ...] = (256, 256),
    spacing: tuple[float, ...] = (1.5, 1.5),
    *,
    region: str = "thorax",
    z_center: float | None = None,
    n_nodules: int = 2,
    nodule_diameter_mm: tuple[float, float] = (3.0, 30.0),
    seed: int = 0,
) -> CTPhantom:
    """An axial slice ``(H, W)`` or a volume ``(Z, H, W)`` of a thorax or abdomen, in HU.

    ``spacing``: mm per array axis, in-plane isotropic. ``z_center`` (mm below the lung apex)
    overrides ``region`` (thorax 140, abdomen 320; a volume at 170 spans both). Up to
    ``n_nodules`` nodules, diameters log-uniform in ``nodule_diameter_mm`` (within 3-30), 2 mm
    inside the lung (centred in the slice in 2D). Same seed, same phantom.

    >>> ph = body_phantom((96, 96), (4.0, 4.0), seed=0)
    >>> ph.hu.shape, ph.labels.dtype, [LABELS[i] for i in np.unique(ph.labels)[:4]]
    ((96, 96), dtype('uint8'), ['background', 'fat', 'muscle', 'lung'])
    """
    shape, spacing = tuple(int(n) for n in shape), tuple(float(s) for s in spacing)
    if len(shape) not in (2, 3) or len(spacing) != len(shape) or spacing[-2] != spacing[-1]:
        raise InputError(f"need a 2D/3D shape with isotropic in-plane spacing, got {spacing}")
    if min(shape) < 1 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"shape and spacing must be positive, got {shape} and {spacing}")
    from medimg.io.inputs import check_allocation

    # texture fields and the label map are float64 arrays of the volume: refuse before them
    check_allocation(shape, np.float64, what="the CT phantom", copies=6)
    if region not in REGION_Z:
        raise InputError(f"region must be one of {sorted(REGION_Z)}, got {region!r}")
    if not 3 <= nodule_diameter_mm[0] <= nodule_diameter_mm[1] <= 30:
        raise InputError(f"nodule_diameter_mm must lie within [3, 30], got {nodule_diameter_mm}")
    anat = _Anatomy(rng := np.random.default_rng(seed))
    (h, w), d, dz = shape[-2:], spacing[-1], spacing[0]
    u, v = np.meshgrid((np.arange(w) - (w - 1) / 2) * d, (np.arange(h) - (h - 1) / 2) * d)
    vol, sig = (shape[0] if len(shape) == 3 else 1, h, w), np.array([dz, d, d])  # 2D: 1 slice
    z0 = REGION_Z[region] if z_center is None else float(z_center)
    zs = z0 + dz * (np.arange(vol[0]) - (vol[0] - 1) / 2)
    tex = [ndimage.gaussian_filter(rng.standard_normal(vol), s / sig) for s in (1.0, 4.0, 3.0)]
    tex = [(f - f.mean()) / (f.std() + 1e-12) for f in tex]  # fine, coarse; fat septa
    hu, lab = np.empty(vol), np.empty(vol, np.uint8)
    for i, z in enumerate(zs):
        hu[i], lab[i] = anat.paint(u, v, float(z), [t[i] for t in tex], d)
    affine = np.eye(4)  # columns to the patient's left (-x), rows posterior (-y), slices down
    m = np.array([[0, 0, -d], [0, -d, 0], [-dz, 0, 0]])  # for (slice, row, col)
    affine[:3, :3] = m if len(shape) == 3 else m[:, [1, 2, 0]]
    affine[:3, 3] = [(w - 1) / 2 * d, (h - 1) / 2 * d, -zs[0]]
    nods = _add_nodules(rng, hu, lab, u, v, zs, sig, n_nodules, nodule_diameter_mm, affine)
    hu, lab = hu.reshape(shape).astype(np.float32), lab.reshape(shape)
    return CTPhantom(hu, lab, spacing, affine, nods)
