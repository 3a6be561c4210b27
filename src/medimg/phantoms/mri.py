"""Brain- and knee-like MRI phantoms with tissue classes, relaxation contrasts and fine structure.

Anatomy is drawn in normalised coordinates (the field of view is ``[-1, 1]`` per axis) from
ellipsoids, bands and seeded random fields: band-pass noise folds the cortex into gyri and
sulci and carves trabeculae inside bone marrow; low-pass noise perturbs outlines and adds
tissue texture. Random fields are built from a fixed lattice of Fourier coefficients that
depends only on the seed, so one seed gives the same anatomy at every matrix size (finer grids
just resolve more of it). Labels are drawn on a grid ``oversample`` times finer and averaged,
which gives partial-volume fractions and intensities at tissue boundaries. Intensity: the spin
echo signal ``PD (1 - exp(-TR/T1)) exp(-TE/T2)`` per tissue, times a smooth background phase.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from medimg.errors import InputError

__all__ = ["CONTRASTS", "TISSUES", "MRIPhantom", "brain_phantom", "knee_phantom"]

#: name -> (proton density, T1 ms, T2 ms); approximate 3 T literature values.
TISSUES: dict[str, tuple[float, float, float]] = {
    "background": (0.0, 1.0, 1.0),
    "fat": (0.9, 380.0, 110.0),
    "bone": (0.05, 1000.0, 1.0),
    "csf": (1.0, 4000.0, 2000.0),
    "gm": (0.8, 1400.0, 100.0),
    "wm": (0.7, 850.0, 75.0),
    "deep_gm": (0.78, 1200.0, 85.0),
    "lesion": (0.85, 1300.0, 180.0),
    "muscle": (0.7, 1400.0, 45.0),
    "marrow": (0.9, 380.0, 120.0),
    "cartilage": (0.75, 1200.0, 40.0),
    "fluid": (1.0, 3000.0, 800.0),
    "ligament": (0.3, 1000.0, 8.0),
}
#: contrast -> (TR ms, TE ms) of a spin-echo sequence.
CONTRASTS: dict[str, tuple[float, float]] = {
    "t1": (500.0, 10.0),
    "t2": (4e3, 100.0),
    "pd": (4e3, 15.0),
}
_BRAIN = ("background", "fat", "bone", "csf", "gm", "wm", "deep_gm", "lesion")
_KNEE = ("background", "fat", "muscle", "bone", "marrow", "cartilage", "fluid", "ligament")


@dataclass
class MRIPhantom:
    """A phantom and its ground truth.

    Attributes
    ----------
    image
        complex64 ``(H, W)`` or ``(D, H, W)``; magnitude scaled to a maximum of 1.
    labels
        int64, same shape: index into ``tissues`` of the dominant tissue per pixel.
    fractions
        float32 ``(T, *shape)`` partial-volume fractions, summing to 1 per pixel.
    tissues, contrast
        Tissue names (``tissues[0] == "background"``); ``"t1"``, ``"t2"`` or ``"pd"``.
    """

    image: torch.Tensor
    labels: torch.Tensor
    fractions: torch.Tensor
    tissues: tuple[str, ...]
    contrast: str

    @property
    def magnitude(self) -> torch.Tensor:
        """float32 magnitude image."""
        return self.image.abs()

    @property
    def support(self) -> torch.Tensor:
        """bool mask of the object (any non-background tissue above half a pixel)."""
        return self.fractions[0] < 0.5


class _Grid:
    """Pixel-centre coordinates of a grid ``oversample`` times finer than ``shape``."""

    def __init__(self, shape: tuple[int, ...], oversample: int, seed: int) -> None:
        self.shape = tuple(n * oversample for n in shape)
        axes = [(np.arange(n, dtype=np.float32) + 0.5) * 2 / n - 1 for n in self.shape]
        mesh = np.meshgrid(*axes, indexing="ij", sparse=True)
        self.x, self.y = mesh[-1], mesh[-2]
        self.z = mesh[0] if len(shape) == 3 else np.zeros((1, 1), np.float32)
        self.seed = seed
        self._count = 0

    def field(
        self, cycles: float, band: bool, weights: tuple[float, ...] | None = None
    ) -> np.ndarray:
        """Unit-variance random field: low-pass below ``cycles`` per FOV, or band-pass at it.

        ``weights`` (one per axis, default 1) scale frequencies per axis: a weight of 3 along y
        makes structures 3 times longer along y (muscle fibres, septa).
        """
        self._count += 1  # each field its own stream, the same for every grid size
        w = np.ones(len(self.shape)) if weights is None else np.asarray(weights, float)
        kmax = cycles * (1.9 if band else 3.0)
        lims = [min(int(kmax / wi), (n - 1) // 2) for wi, n in zip(w, self.shape)]
        ks = [np.arange(-m, m + 1) for m in lims]
        grid = np.meshgrid(*ks, indexing="ij", sparse=True)
        freq = np.sqrt(sum((k * wi) ** 2 for k, wi in zip(grid, w)))
        shape_fn = ((freq - cycles) / (0.3 * cycles)) ** 2 if band else (freq / cycles) ** 2
        # exp(i pi k / n) moves samples from pixel corners to pixel centres
        coef = self._coefficients(ks) * np.exp(
            -0.5 * shape_fn + 1j * np.pi * sum(k / n for k, n in zip(grid, self.shape))
        )
        d = len(self.shape)  # sum of the filter^2 over the whole lattice (an integral)
        var = (4 * np.pi * cycles**2 if d == 3 else 2 * np.pi * cycles) * 0.3 * cycles
        var = (var if band else cycles**d) * np.pi ** (0.5 if band else d / 2) / np.prod(w)
        spec = np.zeros(self.shape, np.complex128)
        spec[np.ix_(*[k % n for k, n in zip(ks, self.shape)])] = coef
        return (np.fft.ifftn(spec, norm="forward").real / np.sqrt(var)).astype(np.float32)

    def _coefficients(self, ks: list[np.ndarray], block: int = 16) -> np.ndarray:
        """Complex normal coefficients at frequencies ``ks``, drawn in seeded fixed-size blocks
        so that each frequency gets the same value whatever subset a grid asks for."""
        out = np.empty([len(k) for k in ks], np.complex128)
        spans = [range(k[0] // block, k[-1] // block + 1) for k in ks]
        for idx in itertools.product(*spans):
            rng = np.random.default_rng([self.seed, self._count, *(i + 4096 for i in idx)])
            raw = rng.standard_normal((2,) + (block,) * len(ks))
            dst, src = [], []
            for i, k in zip(idx, ks):
                lo, hi = max(i * block, k[0]), min(i * block + block - 1, k[-1])
                dst.append(slice(lo - k[0], hi - k[0] + 1))
                src.append(slice(lo - i * block, hi - i * block + 1))
            out[tuple(dst)] = raw[0][tuple(src)] + 1j * raw[1][tuple(src)]
        return out

    def ellipsoid(self, center: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
        """Squared normalised radius about ``center``/``radii`` given as ``(z, y, x)``."""
        cz, cy, cx = center
        rz, ry, rx = radii
        return ((self.x - cx) / rx) ** 2 + ((self.y - cy) / ry) ** 2 + ((self.z - cz) / rz) ** 2

    def band(self, p0: tuple[float, float], p1: tuple[float, float], depth: float) -> np.ndarray:
        """In-plane distance to the segment ``p0 -> p1`` (``(y, x)``), infinite beyond ``|z|``."""
        d = np.subtract(p1, p0)
        t = np.clip(((self.y - p0[0]) * d[0] + (self.x - p0[1]) * d[1]) / (d @ d), 0, 1)
        dist = np.hypot(self.y - p0[0] - t * d[0], self.x - p0[1] - t * d[1])
        return np.where(np.abs(self.z) < depth, dist, np.inf)


def _check(shape: tuple[int, ...], contrast: str, oversample: int) -> None:
    if len(shape) not in (2, 3) or min(shape) < 4:
        raise InputError(f"shape must be (H, W) or (D, H, W) with sizes >= 4, got {shape}")
    if contrast not in CONTRASTS:
        raise InputError(f"contrast must be one of {sorted(CONTRASTS)}, got {contrast!r}")
    if oversample < 1:
        raise InputError(f"oversample must be >= 1, got {oversample}")
    from medimg.io.inputs import check_allocation

    # the oversampled grid holds a few float64 fields at once: refuse before allocating them
    fine = [int(n) * int(oversample) for n in shape]
    check_allocation(fine, np.complex128, what="the oversampled MRI phantom", copies=4)


def _brain_labels(g: _Grid, lesions: int) -> np.ndarray:
    t = {name: i for i, name in enumerate(_BRAIN)}
    rho = np.sqrt(g.ellipsoid((0, 0.02, 0), (0.75, 0.86, 0.7))) * (1 + 0.02 * g.field(3, False))
    lab = np.zeros(np.broadcast_shapes(rho.shape, g.shape), np.uint8)
    lab[rho < 1] = t["fat"]
    lab[rho < 0.94] = t["bone"]
    lab[rho < 0.875] = t["csf"]
    # Sulci: CSF along the zero lines of a band-pass field, cut in from the brain surface to a
    # varying depth; the cortex is then a ribbon of constant thickness along every CSF boundary.
    depth = 0.13 + 0.04 * g.field(4, False)
    sulci = (np.abs(g.field(14, True)) < 0.2) & (rho > 0.85 - depth)
    brain = (rho < 0.85) & ~sulci
    to_csf = ndimage.distance_transform_edt(brain, sampling=[2 / n for n in g.shape])
    lab[brain] = t["wm"]
    lab[brain & (to_csf < 0.032)] = t["gm"]
    midline = np.abs(g.x - 0.02 * g.y + 0.01 * g.field(6, False))  # interhemispheric fissure
    lab[(midline < 0.05) & (np.abs(g.y) > 0.32) & (lab == t["wm"])] = t["gm"]
    lab[(midline < 0.012) & (np.abs(g.y) > 0.3) & (rho < 0.875)] = t["csf"]
    for sx in (-1, 1):  # thalami, caudate heads, lateral ventricles
        lab[g.ellipsoid((0, 0.1, 0.11 * sx), (0.2, 0.12, 0.08)) < 1] = t["deep_gm"]
        lab[g.ellipsoid((0.05, -0.17, 0.1 * sx), (0.15, 0.07, 0.05)) < 1] = t["deep_gm"]
        vent = g.ellipsoid((0.1, -0.06, 0.065 * sx), (0.3, 0.26, 0.04)) + 0.4 * g.y
        lab[vent < 1] = t["csf"]
    lab[(np.abs(g.x) < 0.012) & (np.abs(g.y - 0.1) < 0.09) & (np.abs(g.z) < 0.15)] = t["csf"]
    rng = np.random.default_rng([g.seed, 1000])
    for _ in range(lesions):  # white-matter lesions (MS-like), placed off the centre
        cy, cx = rng.uniform(-0.5, 0.5, 2) * (0.9, 0.8)
        r = rng.uniform(0.015, 0.04)
        cz = rng.uniform(-0.3, 0.3) if len(g.shape) == 3 else 0.0  # 2D: in the slice
        blob = g.ellipsoid((cz, cy, cx), (r, r * 1.4, r))
        lab[(blob < 1) & (lab == t["wm"])] = t["lesion"]
    return lab


def _knee_labels(g: _Grid) -> np.ndarray:
    t = {name: i for i, name in enumerate(_KNEE)}
    wobble = 1 + 0.03 * g.field(3, False)
    leg = ((g.x - 0.05 - 0.1 * g.y**2) / 0.62) ** 2 + (g.z / 0.8) ** 2
    lab = np.zeros(np.broadcast_shapes(leg.shape, g.shape), np.uint8)
    lab[leg * wobble < 1] = t["fat"]
    septa = np.abs(g.field(8, True, (3.0,) * (len(g.shape) - 2) + (3.0, 1.0)))
    lab[(leg * wobble < 0.8) & (septa > 0.12)] = t["muscle"]  # fat septa along the fibres
    lab[g.ellipsoid((0, 0.16, -0.3), (0.5, 0.1, 0.1)) < 1] = t["fat"]  # infrapatellar fat pad
    lab[g.ellipsoid((0, -0.32, -0.3), (0.5, 0.16, 0.04)) < 1] = t["fluid"]  # suprapatellar bursa
    femur = np.minimum(
        g.ellipsoid((0, -0.12, 0.03), (0.7, 0.3, 0.3)),
        np.maximum(((g.x - 0.0) / 0.2) ** 2, (g.z / 0.6) ** 2) + (g.y > -0.1),
    )
    tibia = np.minimum(
        g.ellipsoid((0, 0.44, 0.03), (0.7, 0.2, 0.33)),
        np.maximum(((g.x - 0.05) / 0.19) ** 2, (g.z / 0.6) ** 2) + (g.y < 0.4),
    )
    patella = g.ellipsoid((0, -0.06, -0.43), (0.3, 0.13, 0.055))
    lab[(femur < 1.25) & (g.y > -0.12)] = t["cartilage"]
    lab[(tibia < 1.2) & (g.y < 0.3) & (np.abs(g.x - 0.03) < 0.3)] = t["cartilage"]
    lab[patella < 1.35] = t["cartilage"]
    trabeculae = np.abs(g.field(45, True)) < 0.15  # thin struts; partial volume greys them
    for bone in (femur, tibia, patella):
        lab[bone < 1] = t["bone"]
        inner = bone < 0.85
        lab[inner] = t["marrow"]
        lab[inner & trabeculae] = t["bone"]
    joint = g.ellipsoid((0, 0.215, 0.03), (0.5, 0.012, 0.3)) < 1  # joint space
    lab[(lab == t["cartilage"]) & joint] = t["fluid"]
    for tip in (-0.27, 0.31):  # menisci: dark wedges at the joint line
        wedge = g.ellipsoid((0, 0.215, tip), (0.6, 0.03, 0.06))
        lab[(wedge < 1) & (lab != t["bone"]) & (lab != t["marrow"])] = t["ligament"]
    soft = (lab != t["bone"]) & (lab != t["marrow"])
    lab[g.band((0.07, -0.44), (0.46, -0.25), 0.3) < 0.025] = t["ligament"]  # patellar tendon
    lab[soft & (g.band((0.0, 0.02), (0.27, 0.2), 0.12) < 0.022)] = t["ligament"]  # PCL
    lab[soft & (g.band((-0.02, 0.12), (0.24, -0.05), 0.12) < 0.018)] = t["ligament"]  # ACL
    return lab


def _render(
    lab: np.ndarray, g: _Grid, names: tuple[str, ...], oversample: int, contrast: str
) -> MRIPhantom:
    shape = tuple(n // oversample for n in g.shape)
    tr, te = CONTRASTS[contrast]
    pd, t1, t2 = (np.array([TISSUES[n][i] for n in names]) for i in range(3))
    signal = (pd * (1 - np.exp(-tr / t1)) * np.exp(-te / t2)).astype(np.float32)
    texture = 1 + 0.06 * g.field(25, False) + 0.03 * g.field(60, False)
    hires = torch.from_numpy(signal[lab] * texture)[None, None]
    onehot = torch.nn.functional.one_hot(torch.from_numpy(lab).long(), len(names))
    onehot = onehot.movedim(-1, 0).float()[None]
    pool = torch.nn.functional.avg_pool2d if len(shape) == 2 else torch.nn.functional.avg_pool3d
    mag = pool(hires, oversample)[0, 0]
    fractions = pool(onehot, oversample)[0]
    coarse = _Grid(shape, 1, g.seed + 7919)  # smooth phase: ramp + curvature + slow field
    a, b, c = np.random.default_rng([g.seed, 2000]).uniform(-1, 1, 3)
    x, y, slow = coarse.x, coarse.y, coarse.field(1.5, False)
    phase = np.pi * (0.4 * a * x + 0.4 * b * y + 0.3 * c * (x**2 + y**2)) + 0.5 * slow
    image = (mag / mag.max()) * torch.exp(1j * torch.from_numpy(phase.astype(np.float32)))
    return MRIPhantom(image.to(torch.complex64), fractions.argmax(0), fractions, names, contrast)


def brain_phantom(
    shape: tuple[int, ...] = (256, 256),
    contrast: str = "t1",
    seed: int = 0,
    lesions: int = 3,
    oversample: int = 2,
) -> MRIPhantom:
    """Axial brain-like phantom: scalp fat, skull, CSF, folded cortex, white matter, deep grey
    nuclei, ventricles, fissure and ``lesions`` white-matter lesions; 2D ``(H, W)`` is an
    axial slice, 3D ``(D, H, W)`` an ellipsoidal head whose structures end along ``D``.

    Examples
    --------
    >>> p = brain_phantom((64, 48), contrast="t2", seed=3)
    >>> p.image.shape, p.image.dtype, p.tissues[5]
    (torch.Size([64, 48]), torch.complex64, 'wm')
    """
    _check(shape, contrast, oversample)
    g = _Grid(tuple(shape), oversample, seed)
    return _render(_brain_labels(g, lesions), g, _BRAIN, oversample, contrast)


def knee_phantom(
    shape: tuple[int, ...] = (320, 320),
    contrast: str = "pd",
    seed: int = 0,
    oversample: int = 2,
) -> MRIPhantom:
    """Sagittal knee-like phantom: femur, tibia and patella (cortex, fatty marrow with
    trabecular texture), cartilage, joint fluid, menisci, tendon, cruciate ligaments, muscle
    with fat septa and subcutaneous fat. 3D volumes extend the anatomy medio-laterally.

    Examples
    --------
    >>> p = knee_phantom((40, 36), seed=1)
    >>> float(p.fractions.sum(0).mean())
    1.0
    """
    _check(shape, contrast, oversample)
    g = _Grid(tuple(shape), oversample, seed)
    return _render(_knee_labels(g), g, _KNEE, oversample, contrast)
