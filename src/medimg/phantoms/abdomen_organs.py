"""Abdominal organs of the abdomen generator, each a deformable template: a canonical shape
(unions and differences of ellipsoids) with random size, pose and a smooth random surface
deformation, clipped to the abdominal cavity.

Positions follow adult anatomy relative to the spine and the diaphragm (z = 0 at the right
dome, about T9-T10): liver in the right upper quadrant under the diaphragm with its left lobe
across the midline; spleen left, posterior and superior, against the ribs; kidneys
retroperitoneal beside the spine at about T12-L3 (centre 110-135 mm below the dome), the hilum
facing anteromedially, the right one 10-25 mm lower; stomach in the left upper quadrant;
pancreas along the splenic vein; colon framing the small-bowel loops.
"""

from __future__ import annotations

import numpy as np

from medimg.phantoms.abdomen_body import Body
from medimg.phantoms.abdomen_shapes import Grid, T, capsules, ellipsoid, rotation, smooth_field

__all__ = ["draw_organs"]


def draw_organs(rng: np.random.Generator, g: Grid, b: Body, tis: np.ndarray) -> dict:
    """Paint bowel, stomach, pancreas, vessels, liver, spleen and kidneys into ``tis``; returns
    landmark points (mm) the tests and the vessel drawing use."""
    bump = smooth_field(g.shape, g.spacing, 30.0, rng)  # lobulated organ surfaces
    ac, bfc, bbc = (float(np.median(v)) for v in b.cavity_axes())
    y_vb = float(np.median(b.y_vb))
    marks: dict = {"y_vb": y_vb}
    _bowel(rng, g, b, tis, ac, bfc, y_vb)
    _stomach(rng, g, b, tis, ac, bfc)
    spleen_c, spleen_n, spleen_thick = _spleen_pose(rng, ac, bfc, bbc)
    hilum = spleen_c + spleen_n * spleen_thick * 1.3
    conf = np.array([8.0, y_vb + b.vb_ap + 40, -95 + rng.uniform(-10, 10)])
    porta = np.array([0.3 * ac, 0.05 * bfc, -60 + rng.uniform(-10, 10)])
    _pancreas(rng, g, tis, conf, hilum)
    _liver(rng, g, b, tis, bump, ac, bfc, porta, marks)
    abd = b.abdomen
    tis[capsules(g, [porta, conf], rng.uniform(6, 8)) & abd] = T.PORTAL
    tis[capsules(g, [conf, conf + np.array((8, 10, -110))], rng.uniform(4, 6)) & abd] = T.PORTAL
    tis[capsules(g, [conf, (conf + hilum) / 2 + (0, -5, 5), hilum], 4.5) & abd] = T.PORTAL
    _spleen(g, tis, bump, spleen_c, spleen_n, spleen_thick, rng, b)
    marks["spleen"] = spleen_c
    aorta, ivc = _great_vessels(rng, g, b, tis, y_vb)
    _kidneys(rng, g, b, tis, bump, y_vb, aorta, ivc, marks)
    return marks


def _soft_union(f1: np.ndarray, f2: np.ndarray, k: float = 8.0) -> np.ndarray:
    return -np.logaddexp(-k * f1, -k * f2) / k


def _liver(rng, g: Grid, b: Body, tis, bump, ac, bfc, porta, marks) -> None:
    s = rng.uniform(0.8, 1.1)
    right_c = (0.45 * ac, -0.05 * bfc, -55 * s)
    box, f1 = ellipsoid(g, right_c, (0.55 * ac * s, 0.8 * bfc * s, 95 * s),
                        rotation(rng.uniform(-0.15, 0.15), rng.uniform(-0.1, 0.1)), bbox=False)  # fmt: skip
    _, f2 = ellipsoid(g, (-0.05 * ac, 0.42 * bfc, -35), (0.42 * ac * s * rng.uniform(0.7, 1.2),
                      0.33 * bfc, 32 * s), rotation(0.0, rng.uniform(-0.2, 0.2)), bbox=False)  # fmt: skip
    f = _soft_union(f1, f2) + 0.1 * bump
    liver = (f < 0) & b.abdomen & (g.Z < b.z_dia - 2)
    tis[liver] = T.LIVER
    marks["liver"] = np.array(right_c)
    if rng.random() < 0.7:  # gallbladder under the liver
        box, fg = ellipsoid(g, (0.22 * ac, 0.22 * bfc, -95 * s), np.array([16, 14, 35]) * rng.uniform(0.6, 1.2),
                            rotation(0, 0.4, 0))  # fmt: skip
        tis[box][(fg < 0) & b.abdomen[box]] = T.BILE
    # portal branches from the hilum and hepatic veins to the IVC, inside the liver only
    veins = np.zeros(g.shape, bool)
    for _ in range(int(rng.integers(4, 7))):
        d = rng.standard_normal(3) * (1.0, 0.6, 0.5) + (0.6, 0, 0.1)
        end = porta + d / np.linalg.norm(d) * rng.uniform(40, 80)
        capsules(g, [porta, end], [rng.uniform(4, 6), 2.5], out=veins)
    top = np.array([20.0, -0.05 * bfc, -15.0])
    for xe in (0.7 * ac, 0.25 * ac, -0.25 * ac):
        capsules(g, [top, (xe, 0.1 * bfc, -30 - rng.uniform(0, 30))], [5, 2.5], out=veins)
    tis[veins & liver] = T.HEPATIC_VESSEL


def _spleen_pose(rng, ac, bfc, bbc):
    phi = np.deg2rad(-140 + rng.uniform(-12, 12))  # left-posterior (+x is the patient's right)
    wall = np.array([ac * np.cos(phi), bbc * np.sin(phi), 0.0])
    n = -np.array([np.cos(phi) / ac, np.sin(phi) / bbc, 0.0])
    n /= np.linalg.norm(n)
    thick = rng.uniform(18, 26)
    centre = wall + n * (thick * 0.85 + 2)
    centre[2] = -55 + rng.uniform(-20, 10)
    return centre, n, thick


def _spleen(g: Grid, tis, bump, c, n, thick, rng, b: Body) -> None:
    t = np.array([-n[1], n[0], 0.0])
    rot = np.stack([n, t, (0, 0, 1.0)], axis=1) @ rotation(0, 0, rng.uniform(-0.3, 0.3))
    semi = (thick, rng.uniform(35, 50), rng.uniform(40, 65))
    box, f = ellipsoid(g, c, semi, rot)
    hollow_semi = (thick * 1.1, semi[1] * 0.85, semi[2] * 0.85)
    _, hollow = ellipsoid(g, c + n * thick * 1.6, hollow_semi, rot, box=box)
    f = np.maximum(f, -hollow) + 0.08 * bump[box]  # concave towards the hilum
    tis[box][(f < 0) & b.abdomen[box]] = T.SPLEEN


def _kidneys(rng, g: Grid, b: Body, tis, bump, y_vb, aorta, ivc, marks) -> None:
    z_left = -120 + rng.uniform(-15, 15)
    for side, name in ((1, "kidney_right"), (-1, "kidney_left")):
        zc = z_left - (rng.uniform(10, 25) if side == 1 else 0.0)
        c = np.array([side * (b.vb_lat + rng.uniform(30, 40)), y_vb - 6 + rng.uniform(-6, 6), zc])
        semi = np.array([rng.uniform(24, 30), rng.uniform(20, 25), rng.uniform(48, 60)])
        # long axis: upper pole medial and posterior; hilum turned anteromedially
        rot = rotation(side * np.deg2rad(rng.uniform(25, 45)), 0.0, 0.0)
        rot = (
            rotation(0, side * np.deg2rad(rng.uniform(-20, -8)), np.deg2rad(rng.uniform(5, 18)))
            @ rot
        )
        medial = rot @ np.array([-side, 0.0, 0.0])
        box, f = ellipsoid(g, c, semi, rot)
        f = f + 0.05 * bump[box]
        _, notch = ellipsoid(g, c + medial * semi[0] * 1.05, semi * (0.55, 0.5, 0.4), rot, box=box)
        _, sinus = ellipsoid(
            g, c + medial * semi[0] * 0.45, semi * (0.45, 0.45, 0.55), rot, box=box
        )
        _, pelvis = ellipsoid(g, c + medial * semi[0] * 0.6, semi * (0.3, 0.3, 0.3), rot, box=box)
        sub = tis[box]
        kid = (f < 0) & (notch > 0)
        sub[kid] = T.KIDNEY_CORTEX
        sub[kid & (f < -0.25)] = T.KIDNEY_MEDULLA
        sub[kid & (sinus < 0)] = T.VFAT
        sub[(f < 0) & (pelvis < 0)] = T.RENAL_PELVIS
        hil = c + medial * semi[0]
        marks[name] = c
        art = capsules(g, [hil, (aorta[0], aorta[1], hil[2] + 10)], rng.uniform(2.5, 4))
        vein = capsules(g, [hil, (ivc[0], ivc[1] + 3, hil[2])], rng.uniform(3.5, 5.5))
        tis[art & (tis == T.VFAT)] = T.AORTA
        tis[vein & (tis == T.VFAT)] = T.IVC


def _great_vessels(rng, g: Grid, b: Body, tis, y_vb):
    """Aorta (descending, with the iliac bifurcation) and IVC; returns their (x, y) in the
    abdomen for the renal vessels."""
    r_a, r_v = rng.uniform(9, 13), rng.uniform(9, 13)
    ya = y_vb + b.vb_ap + r_a + 2
    z_bif = -240 + rng.uniform(-20, 20)
    aorta = [(-20, y_vb + 2, 260), (-20, y_vb + 5, 40), (-12, ya, -60), (-8, ya, z_bif)]
    tis[capsules(g, aorta, [r_a * 1.1, r_a * 1.05, r_a, r_a * 0.85])] = T.AORTA
    for side in (1, -1):
        tis[capsules(g, [(-8, ya, z_bif), (-8 + side * 55, ya - 25, z_bif - 110)], r_a * 0.6)] = (
            T.AORTA
        )
    yv = y_vb + b.vb_ap + r_v
    ivc = [(22, yv - 2, z_bif - 10), (22, yv, -120), (22, yv + 8, -20), (18, yv + 12, 20)]
    tis[capsules(g, ivc, r_v)] = T.IVC
    for side in (1, -1):
        tis[
            capsules(g, [(22, yv - 2, z_bif - 10), (side * 45, yv - 28, z_bif - 120)], r_v * 0.7)
        ] = T.IVC
    return (-12.0, ya), (22.0, yv)


def _pancreas(rng, g: Grid, tis, conf, hilum) -> None:
    pts = [conf + np.array(d) for d in ((25, 8, -12), (0, 14, 5), (-35, 8, 12))] + [hilum]
    r = rng.uniform(0.8, 1.2)
    tis[capsules(g, pts, [13 * r, 10 * r, 9 * r, 7 * r]) & (tis == T.VFAT)] = T.PANCREAS


def _stomach(rng, g: Grid, b: Body, tis, ac, bfc) -> None:
    s = rng.uniform(0.6, 1.2)
    c = np.array([-0.3 * ac, 0.15 * bfc, -50.0])
    rot = rotation(0.3, 0.4, 0.0)
    box, f = ellipsoid(g, c, (40 * s, 32 * s, 55 * s), rot)
    ant = capsules(g, [c + np.array((0, 10, -40 * s)), (20, 0.3 * bfc, -105)], 14 * s)
    inside = ((f < 0) | ant[box]) & b.abdomen[box]
    sub = tis[box]
    sub[inside] = T.STOMACH_WALL
    lumen = inside.copy()
    for ax in range(3):  # lumen: the inside eroded by one voxel (the wall is 3-6 mm)
        lumen &= np.roll(inside, 1, ax) & np.roll(inside, -1, ax)
    content = T.ORAL_CONTRAST if rng.random() < 0.15 else T.STOMACH_CONTENT
    sub[lumen] = content
    level = c[1] + rng.uniform(0, 30) * s  # supine: gas rises anteriorly
    sub[lumen & (g.Y[box] > level)] = T.GAS


def _bowel(rng, g: Grid, b: Body, tis, ac, bfc, y_vb) -> None:
    """Small-bowel loops (walls, fluid, gas, sometimes oral contrast) in the mesenteric fat,
    framed by the colon (gas and stool)."""
    abd = b.abdomen
    top = -80 + rng.uniform(-20, 15)
    region = abd & (g.Z < top) & (g.Y > y_vb + 15)
    n1 = smooth_field(g.shape, g.spacing, 11.0, rng)
    n2 = smooth_field(g.shape, g.spacing, 30.0, rng)
    thr = rng.uniform(0.2, 0.6)
    tis[region & (n1 > thr - 0.35)] = T.BOWEL_WALL
    lumen = region & (n1 > thr)
    tis[lumen] = T.BOWEL_FLUID
    tis[lumen & (n2 > rng.uniform(0.9, 2.0))] = T.GAS
    if rng.random() < 0.3:
        tis[lumen & (n2 < rng.uniform(-0.5, 0.5))] = T.ORAL_CONTRAST
    zt = -130 + rng.uniform(-20, 20)
    colon = [(0.6 * ac, 0.0, -240), (0.62 * ac, -0.1 * bfc, zt), (0.45 * ac, 0.3 * bfc, zt - 15),
             (0, 0.45 * bfc, zt - 40 + rng.uniform(-30, 30)), (-0.45 * ac, 0.3 * bfc, zt + 10),
             (-0.6 * ac, -0.15 * bfc, zt + 30), (-0.62 * ac, -0.05 * bfc, -250),
             (-0.3 * ac, 0.1 * bfc, -320)]  # fmt: skip
    pts = np.array(colon) + rng.normal(0, 8, (len(colon), 3))
    r = rng.uniform(15, 25)
    wall = capsules(g, pts, r + 3) & abd
    tis[wall] = T.BOWEL_WALL
    lumen = capsules(g, pts, r) & abd
    n3 = smooth_field(g.shape, g.spacing, 8.0, rng)
    tis[lumen] = T.STOOL
    tis[lumen & ((n2 > rng.uniform(0.3, 1.5)) | (n3 > 1.2))] = T.GAS
