"""The body of the abdomen generator: outline, skin fat, muscle wall, chest (lungs with vessels,
heart, mediastinum), diaphragm, spine, ribs, pelvis, arms and the scanner table.

Every quantity is in mm in the anatomy frame of :class:`~.abdomen_shapes.Grid` (+x patient
right, +y anterior, +z up, z = 0 at the right diaphragm dome). Sizes are drawn per case from
adult ranges (abdomen 250-370 mm wide, 160-300 mm deep; subcutaneous fat 4-40 mm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medimg.phantoms.abdomen_shapes import Grid, T, capsules, ellipsoid, smooth_field, superellipse

__all__ = ["Body", "draw_body", "make_body"]

#: z knots (mm) of the body profile: neck, upper chest, chest, upper abdomen, abdomen, pelvis
_Z_KNOTS = np.array([-430.0, -300.0, -200.0, -60.0, 100.0, 230.0, 300.0])


@dataclass
class Body:
    """Per-case body dimensions (functions of z, broadcast ``(1, 1, nz)``) and landmarks."""

    a: np.ndarray  # half width of the skin outline
    bf: np.ndarray  # half depth, front
    bb: np.ndarray  # half depth, back
    t_fat: float
    t_fat_front: float
    t_muscle: float
    dome_r: float  # right dome height (0) and left dome height
    dome_l: float
    dome_radius: float
    y_vb: np.ndarray  # vertebral body centre (y) per z
    vb_lat: float
    vb_ap: float
    y_canal: np.ndarray
    arms: bool
    # filled by draw_body
    cavity: np.ndarray | None = None  # inside the muscle wall
    z_dia: np.ndarray | None = None  # diaphragm height at (x, y)

    def cavity_axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (self.a - self.t_fat - self.t_muscle, self.bf - self.t_fat_front - self.t_muscle,
                self.bb - self.t_fat - self.t_muscle)  # fmt: skip

    @property
    def abdomen(self) -> np.ndarray:
        """Inside the muscle wall and below the diaphragm: where the abdominal organs lie."""
        return self.cavity & (self._Z < self.z_dia)  # type: ignore[operator]


def make_body(rng: np.random.Generator, g: Grid) -> Body:
    a_abd = rng.uniform(125, 185)
    b_abd = a_abd * rng.uniform(0.62, 0.85)
    a_ch, b_ch = a_abd * rng.uniform(0.92, 1.1), b_abd * rng.uniform(0.95, 1.2)
    a_pe, b_pe = a_abd * rng.uniform(0.95, 1.12), b_abd * rng.uniform(0.85, 1.0)
    a_k = [a_pe, a_pe, a_abd, a_abd, a_ch, 0.8 * a_ch, 70.0]
    b_k = [b_pe, b_pe, b_abd, b_abd, b_ch, 0.85 * b_ch, 60.0]
    z = g.z
    a = np.interp(z, _Z_KNOTS, a_k).astype(np.float32)
    bf = np.interp(z, _Z_KNOTS, b_k).astype(np.float32)
    bb = 0.88 * bf
    t_fat = rng.uniform(4, 40)
    t_muscle = rng.uniform(8, 16)
    vb_lat, vb_ap = rng.uniform(20, 26), rng.uniform(15, 19)
    y_canal = -(bb - t_fat - t_muscle) + 22.0
    y_vb = y_canal + vb_ap + 11.0
    return Body(a, bf, bb, t_fat, t_fat * rng.uniform(1.0, 1.5), t_muscle, 0.0,
                -rng.uniform(8, 22), rng.uniform(100, 150), y_vb, vb_lat, vb_ap, y_canal,
                arms=bool(rng.random() < 0.5))  # fmt: skip


def draw_body(rng: np.random.Generator, g: Grid, b: Body, tis: np.ndarray) -> None:
    """Paint skin fat, wall muscle, visceral fat, chest, arms and table into ``tis``."""
    X, Y, Z = g.X, g.Y, g.Z
    b._Z = Z  # type: ignore[attr-defined]
    _table(rng, g, b, tis)
    inside = superellipse(X, Y, b.a, b.bf, b.bb) < 1
    tis[inside] = T.FAT
    fat_in = superellipse(X, Y, b.a - b.t_fat, b.bf - b.t_fat_front, b.bb - b.t_fat) < 1
    tis[fat_in] = T.MUSCLE
    ac, bfc, bbc = b.cavity_axes()
    b.cavity = superellipse(X, Y, ac, bfc, bbc) < 1
    tis[b.cavity] = T.VFAT
    # diaphragm: two domes, the right one higher, lower at the periphery (posterior recesses)
    cx = 0.45 * ac
    dr = b.dome_r - ((X - cx) ** 2 + (Y + 0.1 * bfc) ** 2) / (2 * b.dome_radius)
    dl = b.dome_l - ((X + cx) ** 2 + (Y + 0.1 * bfc) ** 2) / (2 * b.dome_radius)
    b.z_dia = np.maximum(dr, dl)
    if b.arms:
        _arms(rng, g, b, tis)
    _chest(rng, g, b, tis)


def _table(rng: np.random.Generator, g: Grid, b: Body, tis: np.ndarray) -> None:
    y0 = -float(np.max(b.bb)) - rng.uniform(2, 30)
    plate = (np.abs(g.Y - (y0 - 8 + 4e-4 * g.X**2)) < rng.uniform(3, 8)) & (np.abs(g.X) < 230)
    tis[plate] = T.TABLE


def _arms(rng: np.random.Generator, g: Grid, b: Body, tis: np.ndarray) -> None:
    """Arms along the body (about half the cases; the others have them raised out of view)."""
    for side in (1, -1):
        r = rng.uniform(35, 55)
        x0 = side * (float(np.max(b.a)) + rng.uniform(5, 40) + r)
        y0 = rng.uniform(-25, 25)
        pts = [(x0, y0, 200.0), (x0 + side * rng.uniform(-10, 10), y0, -80.0),
               (x0 + side * rng.uniform(-20, 10), y0 + rng.uniform(0, 40), -330.0)]  # fmt: skip
        outer = capsules(g, pts, [r, r * 0.9, r * 0.7])
        tis[outer] = T.FAT
        tis[capsules(g, pts, [r - 6, r * 0.9 - 6, r * 0.7 - 5])] = T.MUSCLE
        bone = capsules(g, [(x0, y0, 200.0), (x0, y0, -80.0)], 11.0)
        tis[bone & outer] = T.CORTEX_BONE
        tis[capsules(g, [(x0, y0, 200.0), (x0, y0, -80.0)], 6.0) & outer] = T.BONE


def _chest(rng: np.random.Generator, g: Grid, b: Body, tis: np.ndarray) -> None:
    """Lungs with vessels, heart and mediastinum above the diaphragm; the diaphragm muscle."""
    X, Y, Z = g.X, g.Y, g.Z
    ac, bfc, _ = b.cavity_axes()
    thorax = b.cavity & (Z >= b.z_dia)
    apex = 235.0 + rng.uniform(-20, 10)
    above = np.clip((Z - 150) / (apex - 150), 0, None)
    lungs = thorax & (superellipse(X, Y, ac, bfc, b.bb) < 1 - above**2)
    mediast = (np.abs(X + 5) < 28 + 10 * (Y > 0)) & (Y > b.y_vb - 12)
    tis[thorax] = T.VFAT
    lungs &= ~mediast
    tis[lungs] = T.LUNG
    n1 = smooth_field(g.shape, g.spacing, 14.0, rng)
    n2 = smooth_field(g.shape, g.spacing, 14.0, rng)
    width = 0.16 + 0.25 * np.clip(1 - np.abs(X) / 90, 0, 1)  # thicker towards the hila
    tis[lungs & (np.abs(n1) < width) & (np.abs(n2) < width)] = T.LUNG_VESSEL
    # heart: anterior, left of midline, resting on the diaphragm
    s = rng.uniform(0.85, 1.1)
    box, f = ellipsoid(g, (-18, 0.25 * float(np.mean(bfc)), 55), (62 * s, 50 * s, 55 * s),
                       _yaw(-0.5))  # fmt: skip
    heart = (f < 0) & thorax[box]
    sub = tis[box]
    sub[heart] = T.MYOCARDIUM
    sub[heart & (f < -0.2)] = T.HEART_BLOOD
    # diaphragm: a muscle sheet 5-7 mm thick under the lungs and heart
    dia = b.cavity & (Z < b.z_dia + 1) & (Z > b.z_dia - rng.uniform(5, 8))
    tis[dia] = T.MUSCLE


def _yaw(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def draw_skeleton(rng: np.random.Generator, g: Grid, b: Body, tis: np.ndarray) -> None:
    """Spine (vertebral bodies, discs, canal, arches), back muscles, psoas, ribs, pelvis."""
    X, Y, Z = g.X, g.Y, g.Z
    # back muscles first: erector spinae, quadratus lumborum, psoas (growing downwards)
    for side in (1, -1):
        er = ((X - side * 30) / 27) ** 2 + ((Y - (b.y_canal - 20)) / 22) ** 2 < 1
        tis[er & (Z < 230)] = T.MUSCLE
        ql = ((X - side * 56) / 18) ** 2 + ((Y - (b.y_canal - 8)) / 13) ** 2 < 1
        tis[ql & (Z < -95) & (Z > -300)] = T.MUSCLE
        r_ps = np.clip((-110 - Z) / 150, 0, 1) * 18 + 5
        ps = ((X - side * (b.vb_lat + r_ps * 0.7)) / r_ps) ** 2 + ((Y - b.y_vb) / r_ps) ** 2 < 1
        tis[ps & (Z < -110) & (Z > -330)] = T.MUSCLE
    level = rng.uniform(27, 31)
    phase = rng.uniform(0, level)
    in_disc = ((Z - phase) % level) < rng.uniform(5, 7)
    vb = ((X / b.vb_lat) ** 2 + ((Y - b.y_vb) / b.vb_ap) ** 2) < 1
    shell = ((X / (b.vb_lat - 2.5)) ** 2 + ((Y - b.y_vb) / (b.vb_ap - 2.5)) ** 2) >= 1
    tis[vb] = T.BONE
    tis[vb & shell] = T.CORTEX_BONE
    tis[vb & in_disc] = T.DISC
    rc = np.sqrt(X**2 + (Y - b.y_canal) ** 2)
    arch = (rc < 16) & ~in_disc
    spinous = (np.abs(X) < 4) & (Y < b.y_canal) & (Y > b.y_canal - 42) & ~in_disc
    transverse = (np.abs(X) < 48) & (np.abs(Y - b.y_canal - 3) < 5)
    transverse &= ((Z - phase) % level > level * 0.35) & ((Z - phase) % level < level * 0.75)
    tis[arch | spinous | transverse] = T.CORTEX_BONE
    tis[rc < 9] = T.CSF
    _ribs(rng, g, b, tis)
    _pelvis(rng, g, b, tis)


def _ribs(rng: np.random.Generator, g: Grid, b: Body, tis: np.ndarray) -> None:
    """Twelve rib pairs in the chest and upper-abdominal wall, sloping down towards the front;
    the lower ones stop short of the front (costal cartilage), the last two laterally."""
    X, Y, Z = g.X, g.Y, g.Z
    ac, bfc, bbc = b.cavity_axes()
    wall = (superellipse(X, Y, ac + 0.6 * b.t_muscle, bfc + 0.6 * b.t_muscle,
                         bbc + 0.6 * b.t_muscle) < 1) & ~b.cavity  # fmt: skip
    wall &= np.abs(X) > 12
    front = 0.5 * (1 + Y / np.maximum(np.sqrt(X**2 + Y**2), 1e-3))  # 1 anterior, 0 posterior
    drop, step, top = rng.uniform(55, 90), rng.uniform(24, 29), rng.uniform(190, 215)
    zz = Z + drop * front
    k = np.round((top - zz) / step)
    near = np.abs(zz - (top - k * step)) < rng.uniform(5, 7)
    reach = np.interp(k, [0, 6, 7, 9, 10, 11], [1.0, 1.0, 0.9, 0.8, 0.45, 0.4])
    rib = wall & near & (k >= 0) & (k <= 11) & (front < reach)
    tis[rib & (front > reach - 0.15) & (k < 10)] = T.CARTILAGE
    tis[rib & ~((front > reach - 0.15) & (k < 10))] = T.RIB
    sternum = (np.abs(X) < 16) & (Z > 30) & (Z < 190) & (Y > 0)
    sternum &= (superellipse(X, Y, ac, bfc + b.t_muscle, bbc) < 1) & ~b.cavity
    tis[sternum] = T.RIB


def _pelvis(rng: np.random.Generator, g: Grid, b: Body, tis: np.ndarray) -> None:
    """Iliac wings below about L4 and the bladder low in the pelvis."""
    X, Y, Z = g.X, g.Y, g.Z
    ac, bfc, bbc = b.cavity_axes()
    top = -230 - rng.uniform(0, 30)
    r = superellipse(X, Y, ac, bfc, bbc)
    grow = np.clip((top - Z) / 60, 0, 1)
    wing = (r > 0.45) & (r < 0.45 + 0.2 * grow) & (Y < 0.2 * bfc) & (np.abs(X) > 40)
    wing &= (Z < top) & (Z > -420)
    tis[wing] = T.BONE
    box, f = ellipsoid(g, (0, 0.3 * float(np.mean(bfc)), -390), (50, 40, 45))
    tis[box][f < 0] = T.URINE
