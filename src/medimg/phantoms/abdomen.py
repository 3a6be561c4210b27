"""Realistic synthetic abdominal CT: chest to pelvis, three contrast phases, liver/spleen/kidney
labels.

:func:`abdomen_ct_case` draws, per seed, a body (outline, skin fat, muscle wall, visceral fat,
arms beside the body in about half the cases, the scanner table), the chest (lungs with
vessels, heart, diaphragm), the skeleton (vertebral bodies, discs, canal, arches, ribs, pelvis),
the great vessels (aorta with its bifurcation, IVC, portal, splenic and mesenteric veins, renal
vessels), bowel (small-bowel loops with fluid, gas, sometimes oral contrast; colon with gas and
stool), stomach, pancreas, gallbladder, and the three labelled organs from deformable templates
(:mod:`medimg.phantoms.abdomen_organs`). The field of view is random (160-400 mm long,
250-450 mm across, anywhere from the lower chest to the pelvis), so organs are often cut at the
volume's edges, as in real scans.

Intensities are Hounsfield units per tissue and contrast phase (:data:`PHASE_HU`), drawn per
case within ranges from the literature (unenhanced liver 55-65, spleen 45-50, kidney 30-35,
blood 40; arterial aorta 250-400, renal cortex 150-250 over a darker medulla, spleen 100-150
and heterogeneous, liver 60-80; portal venous liver 100-130, spleen 110-130, kidney 150-200,
aorta 150-200, portal veins brighter than the aorta), each range widened by 10 % of its centre
on both sides for patient variety. Then per-tissue texture, a blur (0.6-2 mm in-plane), a
reconstruction kernel from smooth to sharp, correlated noise (5-35 HU) and, in some cases,
padding outside the reconstruction circle (-1024 or -2048 HU), like the thorax phantom.

Labels: 1 liver (with its intrahepatic vessels), 2 spleen, 3 kidney (both; cortex, medulla and
pelvis, not the sinus fat). Images are RAS+ (first axis towards the patient's right).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medimg.errors import InputError
from medimg.io.image import Image
from medimg.phantoms.abdomen_body import draw_body, draw_skeleton, make_body
from medimg.phantoms.abdomen_organs import draw_organs
from medimg.phantoms.abdomen_shapes import LABEL_OF, Grid, T, smooth_field

__all__ = ["PHASES", "PHASE_HU", "abdomen_ct_case", "abdomen_tissues"]

PHASES = ("unenhanced", "arterial", "portal")

_COMMON = {
    T.AIR: (-1000, -990), T.FAT: (-120, -80), T.VFAT: (-110, -70), T.BONE: (180, 350),
    T.CORTEX_BONE: (500, 1000), T.DISC: (60, 100), T.CSF: (5, 30), T.LUNG: (-880, -800),
    T.GAS: (-1000, -900), T.BOWEL_FLUID: (0, 25), T.STOOL: (-60, 40), T.BILE: (0, 20),
    T.RIB: (300, 700), T.CARTILAGE: (80, 180), T.ORAL_CONTRAST: (200, 500),
    T.TABLE: (-400, 100), T.URINE: (0, 15), T.STOMACH_CONTENT: (5, 40), T.RENAL_PELVIS: (0, 15),
}  # fmt: skip
_ENHANCING = ("MUSCLE", "LUNG_VESSEL", "MYOCARDIUM", "HEART_BLOOD", "AORTA", "IVC", "PORTAL",
              "LIVER", "HEPATIC_VESSEL", "SPLEEN", "KIDNEY_CORTEX", "KIDNEY_MEDULLA",
              "STOMACH_WALL", "BOWEL_WALL", "PANCREAS")  # fmt: skip
_PHASE_RANGES = {  # in the order of _ENHANCING
    "unenhanced": [(40, 55), (30, 45), (35, 50), (35, 45), (35, 45), (35, 45), (35, 45),
                   (55, 65), (35, 45), (45, 50), (30, 35), (28, 33), (35, 45), (35, 45),
                   (35, 50)],
    "arterial": [(50, 60), (150, 350), (90, 130), (200, 350), (250, 400), (70, 130), (110, 170),
                 (60, 80), (90, 150), (100, 150), (150, 250), (60, 110), (80, 130), (80, 130),
                 (100, 140)],
    "portal": [(55, 65), (120, 180), (90, 120), (140, 190), (150, 200), (120, 170), (160, 220),
               (100, 130), (150, 200), (110, 130), (150, 200), (130, 180), (80, 110), (80, 110),
               (80, 120)],
}  # fmt: skip
#: phase -> tissue id -> (low, high) mean HU before the 10 % widening.
PHASE_HU = {
    ph: {**_COMMON, **{getattr(T, n): r for n, r in zip(_ENHANCING, ranges)}}
    for ph, ranges in _PHASE_RANGES.items()
}
#: texture (HU std of a smooth field) per tissue; the arterial spleen is mottled (arciform).
_TEXTURE = {T.LIVER: 6, T.SPLEEN: 5, T.KIDNEY_CORTEX: 6, T.KIDNEY_MEDULLA: 6, T.FAT: 8,
            T.VFAT: 10, T.MUSCLE: 6, T.LUNG: 30, T.BONE: 60, T.STOOL: 40, T.BOWEL_FLUID: 6,
            T.PANCREAS: 10, T.CORTEX_BONE: 100, T.ORAL_CONTRAST: 60}  # fmt: skip


def _draw(rng: np.random.Generator, v) -> float:
    return float(v) if np.isscalar(v) else float(rng.uniform(*v))


def _grid(rng, spacing, fov_mm, length_mm, centre_z_mm) -> Grid:
    fov, length = _draw(rng, fov_mm), _draw(rng, length_mm)
    if not (50 <= fov <= 1000 and 20 <= length <= 1000):
        raise InputError(f"fov_mm {fov:.0f} and length_mm {length:.0f} must be 50-1000 mm")
    half = length / 2
    zc = float(np.clip(_draw(rng, centre_z_mm), -420 + half, max(-420 + half, 280 - half)))
    centre = (rng.uniform(-25, 25), rng.uniform(-30, 15), zc)
    n = [max(8, round(fov / spacing[0])), max(8, round(fov / spacing[1])),
         max(4, round(length / spacing[2]))]  # fmt: skip
    axes = [c + (np.arange(k) - (k - 1) / 2) * s for c, k, s in zip(centre, n, spacing)]
    x, y, z = (a.astype(np.float32).reshape([-1 if i == j else 1 for j in range(3)])
               for i, a in enumerate(axes))  # fmt: skip
    shape = tuple(n)
    # patient pose: a small turn in the table plane and a smooth whole-body deformation
    yaw, amp = rng.uniform(-0.08, 0.08), rng.uniform(3, 7)
    c, s = np.cos(yaw), np.sin(yaw)
    fields = [np.clip(smooth_field(shape, spacing, 80.0, rng), -2, 2) * amp for _ in range(3)]
    X = c * x - s * y + fields[0]
    Y = s * x + c * y + fields[1]
    Z = np.broadcast_to(z, shape) + fields[2]
    r_max = float(np.hypot(np.abs(axes[0]).max(), np.abs(axes[1]).max()))
    slack = 2 * amp + abs(yaw) * r_max + 2.0
    return Grid(
        x,
        y,
        z,
        X.astype(np.float32),
        Y.astype(np.float32),
        Z.astype(np.float32),
        tuple(float(v) for v in spacing),
        slack,
    )  # type: ignore[arg-type]


def abdomen_tissues(
    seed: int,
    spacing: tuple[float, float, float] = (4.0, 4.0, 5.0),
    fov_mm: float | tuple[float, float] = (250.0, 450.0),
    length_mm: float | tuple[float, float] = (160.0, 400.0),
    centre_z_mm: float | tuple[float, float] = (-200.0, 40.0),
) -> tuple[np.ndarray, Grid, dict]:
    """The tissue map (:class:`~.abdomen_shapes.T` ids) of case ``seed``, its grid and the
    organ landmarks (mm, anatomy frame): the geometry alone, without intensities."""
    rng = np.random.default_rng([seed, 61, 0])
    g = _grid(rng, spacing, fov_mm, length_mm, centre_z_mm)
    body = make_body(rng, g)
    tis = np.zeros(g.shape, np.uint8)
    draw_body(rng, g, body, tis)
    draw_skeleton(rng, g, body, tis)
    marks = draw_organs(rng, g, body, tis)
    return tis, g, marks


def abdomen_ct_case(
    seed: int,
    *,
    phase: str | None = None,
    spacing: tuple[float, float, float] = (4.0, 4.0, 5.0),
    fov_mm: float | tuple[float, float] = (250.0, 450.0),
    length_mm: float | tuple[float, float] = (160.0, 400.0),
    centre_z_mm: float | tuple[float, float] = (-200.0, 40.0),
    noise_hu: float | tuple[float, float] = (5.0, 35.0),
    blur_mm: float | tuple[float, float] = (0.6, 2.0),
    sharpness: float | tuple[float, float] = (0.0, 1.0),
):  # -> SegCase
    """One synthetic abdominal CT in HU with liver/spleen/kidney labels (module doc).

    ``phase``: ``"unenhanced"``, ``"arterial"``, ``"portal"`` or None (drawn per seed). Ranges
    are drawn uniformly per seed; give a number to fix one. ``centre_z_mm``: the centre of the
    field of view along z, 0 at the right diaphragm dome (kidneys at about -120, liver from 0
    to -150). Same seed and options, same case (the geometry does not depend on ``phase``).
    """
    from medimg.phantoms.segmentation import CT_LABELS, SegCase

    if len(spacing) != 3 or min(spacing) <= 0:
        raise InputError(f"spacing must be three positive mm values, got {spacing}")
    rng = np.random.default_rng([seed, 61, 1])
    if phase is None:
        phase = PHASES[int(rng.integers(3))]
    if phase not in PHASES:
        raise InputError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
    tis, g, _ = abdomen_tissues(seed, spacing, fov_mm, length_mm, centre_z_mm)
    hu = render_hu(rng, tis, g, phase, noise_hu, blur_mm, sharpness)
    lab = LABEL_OF[tis]
    if rng.random() < 0.3:  # outside the reconstruction circle: padding, no anatomy
        xs = (np.arange(g.shape[0]) - (g.shape[0] - 1) / 2)[:, None] * spacing[0]
        ys = (np.arange(g.shape[1]) - (g.shape[1] - 1) / 2)[None, :] * spacing[1]
        outside = np.hypot(xs, ys) > 0.5 * min(g.shape[0] * spacing[0], g.shape[1] * spacing[1])
        hu[outside] = -1024.0 if rng.random() < 0.5 else -2048.0
        lab[outside] = 0
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = [float(g.x.ravel()[0]), float(g.y.ravel()[0]), float(g.z.ravel()[0])]
    image = Image(hu[None], affine, modality="CT")
    labels = Image(lab[None], affine, modality="SEG", is_label=True)
    image.meta["phase"] = phase
    return SegCase(image, labels, dict(CT_LABELS))


def render_hu(rng, tis: np.ndarray, g: Grid, phase: str, noise_hu=(5.0, 35.0),
              blur_mm=(0.6, 2.0), sharpness=(0.0, 1.0)) -> np.ndarray:  # fmt: skip
    """Tissue map -> HU: per-case means from :data:`PHASE_HU`, texture, blur, kernel, noise."""
    table = PHASE_HU[phase]
    mean = np.zeros(T.N, np.float32)
    for tid, (lo, hi) in table.items():
        pad = 0.1 * abs(lo + hi) / 2 if tid not in (T.AIR, T.GAS, T.LUNG) else 0.0
        mean[tid] = rng.uniform(lo - pad, hi + pad)
    tex = np.full(T.N, 3.0, np.float32)
    for tid, v in _TEXTURE.items():
        tex[tid] = v
    if phase == "arterial":
        tex[T.SPLEEN] = rng.uniform(15, 35)  # arciform enhancement
        tex[T.KIDNEY_MEDULLA] = 15.0
    field = smooth_field(tis.shape, g.spacing, rng.uniform(6, 14), rng)
    hu = mean[tis] + tex[tis] * field
    sp = np.asarray(g.spacing)
    sigma = np.array([_draw(rng, blur_mm)] * 2 + [_draw(rng, blur_mm) * 1.3]) / sp
    hu = ndimage.gaussian_filter(hu, sigma)
    k = _draw(rng, sharpness)
    if k > 0.5:  # sharp kernel: edge enhancement
        hu += (k - 0.5) * (hu - ndimage.gaussian_filter(hu, 1.0))
    noise = ndimage.gaussian_filter(rng.standard_normal(tis.shape).astype(np.float32),
                                    0.3 + 0.7 * (1 - k))  # fmt: skip
    hu += _draw(rng, noise_hu) * noise / max(float(noise.std()), 1e-6)
    return np.clip(hu, -1024, 3071).astype(np.float32)
