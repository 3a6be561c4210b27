"""Cartesian k-space sampling masks: fastMRI random/equispaced lines, Poisson disc, radial-like.

Each function takes the k-space plane ``shape = (H, W)`` and returns a float32 ``(H, W)`` tensor
(1 = sampled). Line masks sample whole columns (phase encoding is the last axis, as in fastMRI):
``mask[0]`` is fastMRI's 1D ``mask``. Seeded: the same arguments give the same mask. The
acceleration ``R = H W / sampled points`` counts the calibration (ACS) region; exactly
``round(H W / R)`` points are sampled, so ``R`` is met up to integer rounding (within 2 % once
25 or more lines or points are sampled). Unlike fastMRI's ``RandomMaskFunc`` (Bernoulli lines:
``R`` varies between draws) the random mask draws an exact number of lines; the equispaced mask,
like fastMRI's ``EquispacedMaskFractionFunc``, adapts a fractional spacing so that lines inside
the ACS block do not lower ``R``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from medimg.errors import InputError

__all__ = [
    "acceleration_of",
    "acs_region",
    "equispaced_mask",
    "poisson_disc_mask",
    "radial_mask",
    "random_mask",
]


def _check(shape: tuple[int, ...], acceleration: float, center_fraction: float) -> None:
    if len(shape) != 2 or min(shape) < 1:
        raise InputError(f"shape must be (H, W) with positive sizes, got {tuple(shape)}")
    if not acceleration >= 1:
        raise InputError(f"acceleration must be >= 1, got {acceleration}")
    if not 0 <= center_fraction < 1:
        raise InputError(f"center_fraction must be in [0, 1), got {center_fraction}")


def _acs_lines(width: int, center_fraction: float) -> np.ndarray:
    num_low = round(width * center_fraction)
    start = (width - num_low + 1) // 2  # fastMRI's placement: contains index width // 2
    acs = np.zeros(width, dtype=bool)
    acs[start : start + num_low] = True
    return acs


def _line_target(width: int, acceleration: float, acs: np.ndarray) -> int:
    target = round(width / acceleration)
    if target < acs.sum():
        raise InputError(
            f"center_fraction keeps {int(acs.sum())} ACS lines, more than the {target} lines "
            f"acceleration {acceleration} allows; lower center_fraction or acceleration"
        )
    return target


def _to_mask(lines: np.ndarray, height: int) -> torch.Tensor:
    return torch.from_numpy(np.repeat(lines[None].astype(np.float32), height, axis=0))


def random_mask(
    shape: tuple[int, int], acceleration: float, center_fraction: float = 0.08, seed: int = 0
) -> torch.Tensor:
    """Fully sampled ACS block plus uniformly random phase-encode lines (fastMRI "random").

    Examples
    --------
    >>> m = random_mask((320, 368), acceleration=4, center_fraction=0.08, seed=1)
    >>> m.shape, round(acceleration_of(m), 2)
    (torch.Size([320, 368]), 4.0)
    """
    _check(shape, acceleration, center_fraction)
    acs = _acs_lines(shape[1], center_fraction)
    outer = np.flatnonzero(~acs)
    n_outer = _line_target(shape[1], acceleration, acs) - int(acs.sum())
    rng = np.random.default_rng(seed)
    lines = acs.copy()
    lines[rng.choice(outer, size=n_outer, replace=False)] = True
    return _to_mask(lines, shape[0])


def _equispaced_lines(width: int, spacing: float, offset: float, acs: np.ndarray) -> np.ndarray:
    lines = acs.copy()
    pos = np.round(offset + spacing * np.arange(math.ceil(width / spacing) + 1)).astype(int)
    lines[pos[pos < width]] = True
    return lines


def equispaced_mask(
    shape: tuple[int, int], acceleration: float, center_fraction: float = 0.08, seed: int = 0
) -> torch.Tensor:
    """ACS block plus lines at a constant (fractional, rounded) spacing from a random offset.

    The spacing is solved so that the total line count is ``round(W / R)``; consecutive outer
    lines are therefore ``floor(s)`` or ``ceil(s)`` apart.

    Examples
    --------
    >>> m = equispaced_mask((320, 320), acceleration=4, center_fraction=0.08)
    >>> int(m[0].sum())
    80
    """
    _check(shape, acceleration, center_fraction)
    width = shape[1]
    acs = _acs_lines(width, center_fraction)
    target = _line_target(width, acceleration, acs)
    offset = float(np.random.default_rng(seed).random())
    if target == acs.sum():
        return _to_mask(acs, shape[0])
    lo, hi = 1.0, float(width)  # the count decreases with the spacing: bisect on it
    best = acs
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lines = _equispaced_lines(width, mid, offset * mid, acs)
        if abs(int(lines.sum()) - target) < abs(int(best.sum()) - target):
            best = lines
        lo, hi = (mid, hi) if lines.sum() > target else (lo, mid)
    return _to_mask(best, shape[0])


def _calib_box(shape: tuple[int, int], center_fraction: float, target: int) -> np.ndarray:
    box = np.zeros(shape, dtype=bool)
    rows, cols = _acs_lines(shape[0], center_fraction), _acs_lines(shape[1], center_fraction)
    box[np.ix_(rows, cols)] = True
    if target < box.sum():
        raise InputError(f"center_fraction {center_fraction} leaves no room for acceleration")
    return box


def _trim(mask: np.ndarray, fixed: np.ndarray, target: int, rng: np.random.Generator) -> None:
    """Drop random non-calibration points until ``target`` remain (keeps the packing's spacing)."""
    extra = int(mask.sum()) - target
    if extra > 0:
        free = np.flatnonzero(mask & ~fixed)
        mask.flat[rng.choice(free, size=extra, replace=False)] = False


def _poisson_pass(
    radius: np.ndarray, order: np.ndarray, calib: np.ndarray, templates: dict[int, np.ndarray]
) -> np.ndarray:
    height, width = radius.shape
    blocked = calib.copy()
    sampled = calib.copy()
    flat_blocked = blocked.reshape(-1)
    for idx in order:
        if flat_blocked[idx]:
            continue
        y, x = divmod(int(idx), width)
        sampled[y, x] = True
        q = max(1, round(4 * radius[y, x]))  # radius quantised to 1/4 pixel
        disc = templates.get(q)
        if disc is None:
            disc = templates[q] = _disc(q / 4)
        h = disc.shape[0] // 2
        y0, y1, x0, x1 = max(0, y - h), min(height, y + h + 1), max(0, x - h), min(width, x + h + 1)
        blocked[y0:y1, x0:x1] |= disc[y0 - y + h : y1 - y + h, x0 - x + h : x1 - x + h]
    return sampled


def _disc(r: float) -> np.ndarray:
    h = max(0, math.ceil(r) - 1)
    yy, xx = np.mgrid[-h : h + 1, -h : h + 1]
    return (yy**2 + xx**2) < r**2


def poisson_disc_mask(
    shape: tuple[int, int],
    acceleration: float,
    center_fraction: float = 0.08,
    density_slope: float = 2.0,
    seed: int = 0,
) -> torch.Tensor:
    """2D variable-density Poisson-disc mask (for 3D Cartesian phase-encode planes).

    Points are thrown in a seeded random order and kept when no earlier point lies within
    ``r(k) = r0 (1 + density_slope |k|)`` (``|k|`` the elliptic k-space radius, 1 at the edge),
    so the density falls as ``1 / r(k)^2``. ``r0`` is bisected so that the packing holds at
    least ``round(H W / R)`` points; random removals then give the exact count. A fully sampled
    ``center_fraction`` box is kept for calibration.

    Examples
    --------
    >>> m = poisson_disc_mask((48, 40), acceleration=4, seed=0)
    >>> int(m.sum()) == round(48 * 40 / 4)
    True
    """
    _check(shape, acceleration, center_fraction)
    height, width = shape
    target = round(height * width / acceleration)
    calib = _calib_box(shape, center_fraction, target)
    rng = np.random.default_rng(seed)
    order = rng.permutation(height * width)
    ky = (np.arange(height) - height // 2) / (height / 2)
    kx = (np.arange(width) - width // 2) / (width / 2)
    rho = np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    templates: dict[int, np.ndarray] = {}
    lo, hi = 0.5, float(max(shape))  # r0 = lo always gives a full mask
    best = np.ones(shape, dtype=bool)
    for _ in range(14):
        mid = 0.5 * (lo + hi)
        sampled = _poisson_pass(mid * (1 + density_slope * rho), order, calib, templates)
        if sampled.sum() >= target:
            lo, best = mid, sampled
        else:
            hi = mid
    _trim(best, calib, target, rng)
    return torch.from_numpy(best.astype(np.float32))


def radial_mask(
    shape: tuple[int, int], acceleration: float, center_fraction: float = 0.0, seed: int = 0
) -> torch.Tensor:
    """Radial-like Cartesian mask: golden-angle spokes through the k-space centre, rasterised.

    Spokes are added (from a seeded random start angle) until ``round(H W / R)`` points are
    covered; the last spoke is filled from the centre outwards, so the count is exact.

    Examples
    --------
    >>> m = radial_mask((64, 64), acceleration=6, seed=0)
    >>> int(m.sum()) == round(64 * 64 / 6)
    True
    """
    _check(shape, acceleration, center_fraction)
    height, width = shape
    target = round(height * width / acceleration)
    mask = _calib_box(shape, center_fraction, target)
    golden = math.pi * (3 - math.sqrt(5)) / 2  # pi / phi^2: golden angle for lines (period pi)
    angle = float(np.random.default_rng(seed).random()) * math.pi
    t = np.arange(-max(shape), max(shape) + 1) / 2.0  # half-pixel steps along the spoke
    t = t[np.argsort(np.abs(t), kind="stable")]  # centre first: a partial spoke stays central
    count = int(mask.sum())
    while count < target:
        y = np.round(height // 2 + t * math.sin(angle) * height / max(shape)).astype(int)
        x = np.round(width // 2 + t * math.cos(angle) * width / max(shape)).astype(int)
        keep = (y >= 0) & (y < height) & (x >= 0) & (x < width)
        flat = np.unique(y[keep] * width + x[keep], return_index=True)
        new = flat[0][np.argsort(flat[1])]  # first-visit order along the spoke
        new = new[~mask.flat[new]][: target - count]
        mask.flat[new] = True
        count += new.size
        angle += golden
    return torch.from_numpy(mask.astype(np.float32))


def acceleration_of(mask: torch.Tensor, shape: tuple[int, ...] | None = None) -> float:
    """Realised acceleration ``numel / sampled`` of ``mask`` broadcast to ``shape`` (or its own)."""
    m = torch.as_tensor(mask, dtype=torch.float32)
    if shape is not None:
        m = m.expand(shape)
    sampled = float((m != 0).sum())
    return float("inf") if sampled == 0 else m.numel() / sampled


def acs_region(mask: torch.Tensor, shape: tuple[int, ...] | None = None) -> tuple[slice, slice]:
    """The largest fully sampled box centred on the k-space centre ``(H // 2, W // 2)``.

    ``mask`` is ``(H, W)``, a line mask ``(W,)``/``(1, W)`` broadcast to ``shape[-2:]``, or a
    batch ``(..., H, W)`` (a point counts when sampled in every mask). The box grows as a
    square, then along each axis alone. Returns ``(rows, cols)``; both empty when DC is missing.

    Examples
    --------
    >>> acs_region(equispaced_mask((64, 50), 4, center_fraction=0.16))
    (slice(0, 64, None), slice(21, 29, None))
    """
    m = torch.as_tensor(mask).detach().cpu().numpy() != 0
    m = m[None] if m.ndim == 1 else m.reshape(-1, *m.shape[-2:]).all(axis=0)
    if shape is not None:
        m = np.broadcast_to(m, tuple(shape[-2:]))
    height, width = m.shape
    cy, cx = height // 2, width // 2
    r0 = r1 = cy
    c0 = c1 = cx
    if not m[cy, cx]:
        return slice(cy, cy), slice(cx, cx)

    def full(a: int, b: int, c: int, d: int) -> bool:
        return (
            0 <= a and b < height and 0 <= c and d < width and bool(m[a : b + 1, c : d + 1].all())
        )

    while full(r0 - 1, r1 + 1, c0 - 1, c1 + 1):
        r0, r1, c0, c1 = r0 - 1, r1 + 1, c0 - 1, c1 + 1
    for axis in (1, 0):  # then widen each axis alone, one side at a time
        grown = True
        while grown:
            grown = False
            for step in ((-1, 0), (0, 1)):
                box = [r0, r1, c0, c1]
                box[2 * axis] += step[0]
                box[2 * axis + 1] += step[1]
                if full(*box):
                    r0, r1, c0, c1 = box
                    grown = True
    return slice(r0, r1 + 1), slice(c0, c1 + 1)
