"""Varied synthetic thorax CTs with typed lung nodules and hard negatives (seeded).

:func:`thorax_ct_case` draws, per seed, a body 0.5x-1.1x the size of
:func:`medimg.phantoms.ct.body_phantom`'s, the whole lungs (apex and base in view) or a slab,
in-plane spacing 0.5-1.0 mm, slices 0.6-3 mm, noise 10-60 HU, a reconstruction kernel from
smooth to sharp and any of the 48 axis orders/directions of a header. On top of the anatomy:

* a dense vessel tree per lung: trunks from the hilum, branch points, and **stubs** (thick
  trunks ending bluntly near the lung root, the classic false positive);
* fissures (major in both lungs, minor in the right one) and pleural plaques;
* nodules of every type of :mod:`medimg.phantoms.nodules`, placed where their type says;
* excluded calcifications under 3 mm (LUNA16's ``annotations_excluded.csv``).

The anatomy is painted by ``body_phantom`` on a grid of at least 2 x 2 x 3 mm and interpolated
to the scan's grid (slice-by-slice painting at 0.5 mm costs minutes); vessels, fissures, plaques,
nodules and noise are drawn on the scan's grid itself, so they stay sharp. Anatomy, nodules and
noise use separate random streams: the same seed with other nodule options gives the same body.

Ground truth: ``case.nodules`` (type in ``kind``, ``margin``, centre RAS+ mm, diameter),
``case.excluded``, ``case.hard_negatives`` (``vessel_stub``, ``branch_point``,
``pleural_plaque``, ``fissure`` points) and ``case.labels``, the anatomy label map
(:data:`THORAX_LABELS`; nodules are not in it: their voxels keep the tissue under them).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medimg.errors import InputError
from medimg.io.image import Image
from medimg.phantoms.ct import LABELS, _cross, body_phantom
from medimg.phantoms.detection import DetectionCase, Finding
from medimg.phantoms.nodules import NODULE_TYPES
from medimg.phantoms.nodules_placement import Grid, place_nodules

__all__ = ["THORAX_LABELS", "thorax_ct_case"]

#: Label ids of :attr:`DetectionCase.labels` (those of ``body_phantom`` plus two).
THORAX_LABELS = {**LABELS, 14: "fissure", 15: "pleural_plaque"}
LUNG, VESSEL, FISSURE, PLAQUE = 3, 4, 14, 15
_WALL = (1, 2, 6, 7, 12)  # fat, muscle, bone, heart, soft tissue: chest wall and mediastinum


def _draw(rng: np.random.Generator, v) -> float:
    """A scalar as is, a ``(low, high)`` range uniformly."""
    return float(v) if np.isscalar(v) else float(rng.uniform(*v))


def _upsample(vol: np.ndarray, shape: tuple, zoom: np.ndarray, order: int) -> np.ndarray:
    """Centre-aligned resampling of the render grid onto the scan grid ``shape``."""
    import warnings

    src = np.asarray(vol.shape)
    offset = (src - 1) / 2 - (np.asarray(shape) - 1) / 2 * zoom
    with warnings.catch_warnings():  # a 1-D matrix is the diagonal: scipy's fast path (4x)
        warnings.filterwarnings("ignore", "The behavior of affine_transform")
        return ndimage.affine_transform(vol, zoom, offset, output_shape=shape, order=order,
                                        mode="nearest")  # fmt: skip


def _hila(grid: Grid, mid: np.ndarray) -> dict[int, np.ndarray]:
    """Per lung side (-1 right, +1 left), the lung voxel nearest the midline at the height of
    ``mid`` (array mm) among those within 15 mm of the lung's mean row: where trees start."""
    k = int(np.clip(round(mid[0] / grid.spacing[0]), 0, grid.lung.shape[0] - 1))
    rows, cols = np.nonzero(grid.labels[k] == 3)
    out = {}
    for side in (-1, 1):
        mine = (cols * grid.spacing[2] - mid[2]) * side > 0
        if not mine.any():
            continue
        r, c = rows[mine], cols[mine]
        near = np.abs(r - r.mean()) * grid.spacing[1] < 15
        i = np.argmin(np.abs(c[near] * grid.spacing[2] - mid[2]))
        out[side] = np.array([k, r[near][i], c[near][i]]) * grid.spacing
    return out


def _tree(rng, grid: Grid, p, direction, radius, depth, segs, negs) -> None:
    """Bifurcating vessels ``(p0, p1, r)`` (array mm) inside the lung; branch points and ends
    that stop bluntly while still thick are recorded as hard negatives."""
    d = direction / np.linalg.norm(direction)
    end = p + d * radius * rng.uniform(4, 8)
    if radius < 0.35 or depth > 9 or not grid.in_lung(end):
        return
    segs.append((p, end, radius))
    if depth <= 1 and radius > 2.0 and rng.random() < 0.12:  # a trunk stub near the root
        negs.append((end, 2 * radius, "vessel_stub"))
        return
    if radius > 1.2 and rng.random() < 0.5:
        negs.append((end, 2 * radius, "branch_point"))
    axis = _cross(d, rng.standard_normal(3))
    axis /= np.linalg.norm(axis)
    for sign in (1, -1):
        ang = sign * rng.uniform(0.3, 0.8)
        child = d * np.cos(ang) + _cross(axis, d) * np.sin(ang)
        _tree(rng, grid, end, child, radius * rng.uniform(0.68, 0.85), depth + 1, segs, negs)


def _paint_capsules(frac: np.ndarray, segs: list, grid: Grid) -> None:
    """Partial-volume fraction of the capsules ``(p0, p1, r)`` (array mm), max-combined."""
    sp, edge = grid.spacing, grid.spacing.min()
    for p0, p1, r in segs:
        lo = np.maximum(np.floor((np.minimum(p0, p1) - r - edge) / sp).astype(int), 0)
        hi = np.minimum(np.ceil((np.maximum(p0, p1) + r + edge) / sp).astype(int) + 1, frac.shape)
        if np.any(hi <= lo):
            continue
        g = np.stack(np.meshgrid(*[np.arange(a, b) * s for a, b, s in zip(lo, hi, sp)],
                                 indexing="ij"), axis=-1) - p0  # fmt: skip
        seg = p1 - p0
        t = np.clip(g @ seg / max(seg @ seg, 1e-9), 0, 1)
        dist = np.linalg.norm(g - t[..., None] * seg, axis=-1)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        frac[box] = np.maximum(frac[box], np.clip(0.5 - (dist - r) / edge, 0, 1))


def _fissures(rng, hu, lab, grid: Grid, hila, lung) -> list:
    """Major fissures (both lungs) and the minor one (right lung) as thin dense sheets."""
    negs = []
    planes = []
    for side, h in hila.items():
        tilt = rng.normal(0, 0.15, 3)
        planes.append((h, np.array([0.7, 0.7, 0.1 * side]) + tilt, side, None))
        if side < 0:  # minor fissure: horizontal, anterior to the hilum
            planes.append((h, np.array([1.0, 0, 0]) + tilt * 0.5, side, "anterior"))
    idx = np.argwhere(lung)
    pts = idx * grid.spacing
    for c, n, side, part in planes:
        n = n / np.linalg.norm(n)
        same = (pts[:, 2] - grid.centre_mm[2]) * side > 0  # this lung (columns: patient left)
        if part == "anterior":
            same &= pts[:, 1] < c[1]
        sd = (pts - c) @ n
        thick = rng.uniform(0.5, 1.0)
        across = float(np.sqrt(((n * grid.spacing) ** 2).sum()))  # voxel extent along n
        m = np.clip(0.5 - (np.abs(sd) - thick / 2) / across, 0, 1) * min(1.0, thick / across + 0.3)
        m = m * same
        on = np.flatnonzero(m > 0)
        if not len(on):
            continue
        vox = tuple(idx[on].T)
        hu[vox] = hu[vox] * (1 - m[on]) + m[on] * rng.uniform(-100, 20)
        sheet = on[m[on] >= 0.3]
        lab[tuple(idx[sheet].T)] = FISSURE
        for k in rng.choice(sheet, size=min(3, len(sheet)), replace=False):
            negs.append((idx[k] * grid.spacing, 4.0, "fissure"))
    return negs


def _plaques(rng, hu, lab, grid: Grid, n: int) -> list:
    """Pleural plaques: flat caps of a sphere centred in the chest wall, painted over the lung."""
    negs = []
    for _ in range(n):
        b = grid.pick_pleura(rng)
        if b is None:
            break
        out = grid.outward(b)
        r = rng.uniform(5, 12) * grid.scale
        c = b * grid.spacing + out * 0.75 * r
        lo = np.maximum(np.floor((c - r) / grid.spacing).astype(int), 0)
        hi = np.minimum(np.ceil((c + r) / grid.spacing).astype(int) + 1, hu.shape)
        box = tuple(slice(a, e) for a, e in zip(lo, hi))
        g = np.stack(np.meshgrid(*[np.arange(a, e) * s for a, e, s in zip(lo, hi, grid.spacing)],
                                 indexing="ij"), axis=-1)  # fmt: skip
        dist = np.linalg.norm(g - c, axis=-1)
        m = np.clip(0.5 - (dist - r) / grid.spacing.min(), 0, 1) * grid.lung[box]
        value = rng.uniform(40, 120) if rng.random() < 0.8 else rng.uniform(300, 600)
        hu[box] = hu[box] * (1 - m) + m * value
        lab[box][m >= 0.5] = PLAQUE
        negs.append((b * grid.spacing, 2 * r, "pleural_plaque"))
    return negs


def _orient(image: Image, code: str) -> Image:
    """The same voxels and world positions in the axis order/directions ``code`` (nibabel)."""
    from nibabel import orientations as ornt

    now = ornt.io_orientation(image.affine)
    t = ornt.ornt_transform(now, ornt.axcodes2ornt(tuple(code)))
    arr = ornt.apply_orientation(image.array[0], t)
    aff = image.affine @ ornt.inv_ornt_aff(t, image.spatial_shape)
    return Image(np.ascontiguousarray(arr)[None], aff, modality=image.modality,
                 is_label=image.is_label)  # fmt: skip


def _random_code(rng: np.random.Generator) -> str:
    axes = [("L", "R"), ("P", "A"), ("I", "S")]
    return "".join(axes[i][int(rng.integers(2))] for i in rng.permutation(3))


def thorax_ct_case(
    seed: int,
    *,
    scale: float | tuple[float, float] = (0.5, 1.1),
    in_plane_mm: float | tuple[float, float] = (0.5, 1.0),
    slice_mm: float | tuple[float, float] = (0.6, 3.0),
    noise_hu: float | tuple[float, float] = (10.0, 60.0),
    sharpness: float | tuple[float, float] = (0.0, 1.0),
    full_lungs: float = 0.75,
    orientation: str = "any",
    nodule_types: tuple[str, ...] = NODULE_TYPES,
    n_nodules: tuple[int, int] = (2, 6),
    diameter_mm: tuple[float, float] = (3.0, 30.0),
    n_calcifications: tuple[int, int] = (0, 2),
    n_plaques: tuple[int, int] = (0, 3),
    max_voxels: int = 16_000_000,
) -> DetectionCase:
    """A thorax CT with typed nodules (module doc). Ranges are drawn uniformly per seed; give a
    number to fix one. ``full_lungs``: probability that apex and base are in view (else a
    120-200 mm slab). ``orientation``: ``"any"`` (random), or axis codes such as ``"RAS"``,
    ``"LPS"``, ``"SPL"``. A grid over ``max_voxels`` is coarsened by the same factor on all
    axes (the spacing in the header says so). Same seed and options, same case.

    >>> case = thorax_ct_case(0, scale=0.5, in_plane_mm=3.0, slice_mm=4.0, orientation="RAS")
    >>> case.image.orientation, sorted({f.kind for f in case.nodules}) != []
    ('RAS', True)
    """
    bad = sorted(set(nodule_types) - set(NODULE_TYPES))
    if bad or not nodule_types:
        raise InputError(f"unknown nodule types {bad}; choose from {', '.join(NODULE_TYPES)}")
    if not 3 <= diameter_mm[0] <= diameter_mm[1] <= 30:
        raise InputError(f"diameter_mm must lie within [3, 30], got {diameter_mm}")
    rng = np.random.default_rng([seed, 24, 0])  # anatomy and acquisition
    s, d, dz = _draw(rng, scale), _draw(rng, in_plane_mm), _draw(rng, slice_mm)
    if not (0.2 <= s <= 3 and d > 0 and dz > 0):
        raise InputError(f"scale {s} (0.2-3) and spacings {d}, {dz} mm (> 0) are out of range")
    half = 197.0  # phantom mm: the widest body body_phantom draws, plus a margin
    z_lo, z_hi = -15.0, 265.0  # above the apex, below the lowest diaphragm dome
    if rng.random() >= full_lungs:
        z_lo = rng.uniform(20, 110)
        z_hi = z_lo + rng.uniform(120, 200)
    n_xy = round(2 * half * s / d)
    n_z = max(round((z_hi - z_lo) * s / dz), 2)
    f = max(1.0, (n_xy * n_xy * n_z / max_voxels) ** (1 / 3))
    d, dz, n_xy, n_z = d * f, dz * f, max(int(n_xy / f), 8), max(int(n_z / f), 2)
    dr, dzr = max(d, 2.0), max(dz, 3.0)  # render grid (world mm)
    rshape = (max(int(np.ceil(n_z * dz / dzr)), 2), int(np.ceil(n_xy * d / dr)))
    ph = body_phantom((rshape[0], rshape[1], rshape[1]), (dzr / s, dr / s, dr / s),
                      z_center=(z_lo + z_hi) / 2, n_nodules=0, seed=seed)  # fmt: skip
    shape = (n_z, n_xy, n_xy)
    zoom = np.array([dz / dzr, d / dr, d / dr])
    hu = _upsample(ph.hu.astype(np.float32), shape, zoom, 1)
    lab = _upsample(ph.labels, shape, zoom, 0)
    del ph
    grid = Grid(np.array([dz, d, d]), s, lab)
    # phantom frame (u left, v posterior, z down from the apex) -> array mm (slice, row, col)
    z0 = (z_lo + z_hi) / 2 - (n_z - 1) / 2 * dz / s
    mid = np.array([(110.0 - z0) * s, grid.centre_mm[1], grid.centre_mm[2]])  # lung roots
    hila = _hila(grid, mid)
    segs: list = []
    negs: list = []
    for side, h in hila.items():
        for _ in range(int(rng.integers(10, 15))):
            direction = rng.standard_normal(3) + np.array([0.3, 0.0, 1.3 * side])
            _tree(rng, grid, h, direction, rng.uniform(2.5, 5.0) * s, 0, segs, negs)
        for _ in range(int(rng.integers(1, 4))):  # trunks cut short at the lung root
            u = rng.standard_normal(3) + np.array([0.0, 0.0, 1.5 * side])
            u /= np.linalg.norm(u)
            r = rng.uniform(2.5, 4.5) * s
            end = h + u * r * rng.uniform(3, 6)
            if grid.in_lung(end):
                segs.append((h, end, r))
                negs.append((end, 2 * r, "vessel_stub"))
    frac = np.zeros(shape, np.float32)
    _paint_capsules(frac, segs, grid)
    frac *= grid.lung
    hu += frac * (40.0 + 6 * rng.standard_normal(shape).astype(np.float32) - hu)
    lab[(frac >= 0.5) & grid.lung] = VESSEL
    negs += _fissures(rng, hu, lab, grid, hila, grid.lung)
    negs += _plaques(rng, hu, lab, grid, int(rng.integers(n_plaques[0], n_plaques[1] + 1)))
    noise_rng = np.random.default_rng([seed, 24, 2])
    nod_rng = np.random.default_rng([seed, 24, 1])
    found = place_nodules(nod_rng, hu, lab, grid, segs, nodule_types, n_nodules, diameter_mm,
                          n_calcifications)  # fmt: skip
    # reconstruction kernel: smooth blurs the image and correlates the noise; sharp enhances edges
    k, sigma = _draw(rng, sharpness), _draw(rng, noise_hu)
    sp = grid.spacing
    hu = ndimage.gaussian_filter(hu, 0.45 * (1 - k) / sp + 1e-3)
    if k > 0.5:
        hu += (k - 0.5) * (hu - ndimage.gaussian_filter(hu, 0.8 / sp))
    noise = ndimage.gaussian_filter(noise_rng.standard_normal(shape, np.float32),
                                    (0.9 - 0.5 * k) / sp)  # fmt: skip
    hu += sigma * noise / max(float(noise.std()), 1e-6)
    affine = np.eye(4)  # (slice, row, col): slices down, rows posterior, columns patient-left
    affine[:3, :3] = [[0, 0, -d], [0, -d, 0], [-dz, 0, 0]]
    affine[:3, 3] = [grid.centre_mm[2], grid.centre_mm[1], -z0 * s]
    world = lambda p: tuple(float(v) for v in affine[:3, :3] @ (p / sp) + affine[:3, 3])  # noqa: E731
    findings = [Finding(world(c), dia, kind, inc, margin) for c, dia, kind, inc, margin in found]
    hard = [Finding(world(c), float(dia), kind, False) for c, dia, kind in negs]
    code = _random_code(rng) if orientation == "any" else orientation
    image = Image(np.clip(hu, -1024, 3071).astype(np.float32)[None], affine, modality="CT")
    labels = Image(lab[None], affine, modality="SEG", is_label=True)
    try:
        image, labels = _orient(image, code), _orient(labels, code)
    except (ValueError, KeyError) as e:
        raise InputError(f"orientation {code!r} is not three axis codes like 'RAS': {e}") from e
    return DetectionCase(image, findings, labels=labels, hard_negatives=hard)
