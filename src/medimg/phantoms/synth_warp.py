"""Random spatial transforms of the label-map generator (:mod:`medimg.phantoms.synth`): a
random affine plus a smooth displacement (optionally diffeomorphic: a stationary velocity field
integrated by scaling and squaring), and warping with it (labels by nearest neighbour, images
linearly), in torch on the data's device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from medimg.errors import InputError
from medimg.phantoms.synth_ops import make_generator, smooth_noise, uniform

__all__ = ["Deformation", "random_deformation", "warp"]

Seed = int | torch.Generator


@dataclass
class Deformation:
    """Ranges of a random spatial transform (angles in degrees, lengths in voxels).

    Affine about the volume centre: rotation up to ``rotate`` per axis, log-uniform scaling
    within ``1 ± scale``, shear up to ``shear``, translation up to ``translate``. Smooth part:
    Gaussian noise of standard deviation drawn in ``[0, warp_std]`` on a ``warp_grid``-per-axis
    lattice, interpolated to the volume; with ``integrate_steps > 0`` it is a velocity field
    integrated by scaling and squaring (an invertible, fold-free warp), else a displacement.
    """

    rotate: float = 15.0
    scale: float = 0.15
    shear: float = 0.05
    translate: float = 0.0
    warp_std: float = 3.0
    warp_grid: int = 8
    integrate_steps: int = 5


def _affine_matrix(
    d: Deformation, nd: int, gen: torch.Generator, dev: torch.device
) -> torch.Tensor:
    """A random ``nd x nd`` linear map: rotation . shear . scaling."""
    angles = uniform(gen, (3 if nd == 3 else 1,), -d.rotate, d.rotate, dev) * math.pi / 180
    rot = torch.eye(nd, device=dev)
    planes = [(1, 2), (0, 2), (0, 1)] if nd == 3 else [(0, 1)]
    for a, (i, j) in zip(angles.tolist(), planes):
        r = torch.eye(nd, device=dev)
        r[i, i], r[i, j], r[j, i], r[j, j] = math.cos(a), -math.sin(a), math.sin(a), math.cos(a)
        rot = rot @ r
    log_s = math.log1p(d.scale) if d.scale > 0 else 0.0
    scales = torch.exp(uniform(gen, (nd,), -log_s, log_s, dev))
    shear = torch.eye(nd, device=dev) + torch.triu(
        uniform(gen, (nd, nd), -d.shear, d.shear, dev), 1
    )
    return rot @ shear @ torch.diag(scales)


def random_deformation(
    shape: Sequence[int],
    *,
    seed: Seed = 0,
    deformation: Deformation | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """A random smooth displacement ``(ndim, *shape)`` in voxels: output voxel ``x`` takes the
    source value at ``x + u(x)`` (see :func:`warp`)."""
    d = deformation or Deformation()
    shape = [int(n) for n in shape]
    if len(shape) not in (2, 3) or min(shape) < 2:
        raise InputError(f"deformation needs a 2D or 3D shape of at least 2 voxels, got {shape}")
    dev = torch.device(device)
    gen = make_generator(seed, dev)
    nd = len(shape)
    mat = _affine_matrix(d, nd, gen, dev)
    shift = uniform(gen, (nd,), -d.translate, d.translate, dev).view(nd, *[1] * nd)
    lin = (mat - torch.eye(nd, device=dev)).tolist()  # displacement (A - I)(x - c) + t
    shift = uniform(gen, (nd,), -d.translate, d.translate, dev).tolist()
    rel = [_axis(torch.arange(n, device=dev, dtype=torch.float32) - (n - 1) / 2, a, nd)
           for a, n in enumerate(shape)]  # fmt: skip
    field = torch.empty((nd, *shape), device=dev)
    for i in range(nd):  # broadcast sums of 1D coordinates: no full-size grid needed
        comp = rel[0] * lin[i][0] + shift[i]
        for j in range(1, nd):
            comp = comp + rel[j] * lin[i][j]
        field[i] = comp
    if d.warp_std > 0:
        std = float(uniform(gen, (), 0.0, d.warp_std, dev))
        field = field + _smooth_field(shape, d, std, gen, dev)
    return field


def _smooth_field(
    shape: list[int], d: Deformation, std: float, gen: torch.Generator, dev: torch.device
) -> torch.Tensor:
    nd = len(shape)
    if d.integrate_steps <= 0:
        return torch.stack([smooth_noise(shape, [d.warp_grid] * nd, gen, std) for _ in range(nd)])
    # the velocity is smooth on the lattice, so it is integrated on a grid a few times finer
    # than the lattice (cheap), then interpolated to the full grid
    half = [min(n, max(16, 4 * d.warp_grid)) for n in shape]
    vel = torch.stack([smooth_noise(half, [d.warp_grid] * nd, gen, std / 2) for _ in range(nd)])
    disp = vel / 2**d.integrate_steps
    for _ in range(d.integrate_steps):  # phi_{2t} = phi_t o phi_t
        disp = disp + _sample(disp, disp, mode="bilinear")
    mode = "bilinear" if nd == 2 else "trilinear"
    up = F.interpolate(disp[None], size=shape, mode=mode, align_corners=True)[0]
    ratio = torch.tensor([(n - 1) / max(h - 1, 1) for n, h in zip(shape, half)], device=dev)
    return up * ratio.view(nd, *[1] * nd)


def _axis(values: torch.Tensor, axis: int, nd: int) -> torch.Tensor:
    """A 1D tensor shaped to broadcast along ``axis`` of an ``nd``-D array."""
    return values.view([-1 if a == axis else 1 for a in range(nd)])


def _sample(volume: torch.Tensor, field: torch.Tensor, *, mode: str) -> torch.Tensor:
    """``volume`` ``(C, *shape)`` sampled at ``x + field(x)`` (border values outside)."""
    shape, nd, dev = field.shape[1:], field.shape[0], field.device
    grid = torch.empty((1, *shape, nd), device=dev)
    for i, n in enumerate(shape):  # normalised position 2 (x + u) / (n - 1) - 1
        scale = 2.0 / max(n - 1, 1)
        base = _axis(torch.arange(n, device=dev, dtype=torch.float32) * scale - 1, i, nd)
        # grid_sample wants the last array axis first
        torch.add(base, field[i], alpha=scale, out=grid[0, ..., nd - 1 - i])
    out = F.grid_sample(volume[None].float(), grid, mode=mode, padding_mode="border",
                        align_corners=True)  # fmt: skip
    return out[0]


def warp(volume: torch.Tensor, field: torch.Tensor, *, labels: bool = False) -> torch.Tensor:
    """Deform ``volume`` (``(X, Y[, Z])`` or channel-first) by ``field`` from
    :func:`random_deformation`: nearest neighbour for label maps (values kept), linear else."""
    nd = field.shape[0]
    if volume.shape[-nd:] != field.shape[1:]:
        raise InputError(f"volume {tuple(volume.shape)} and field {tuple(field.shape)} differ")
    squeeze = volume.ndim == nd
    vol = volume[None] if squeeze else volume
    if labels:
        if vol.is_floating_point():
            raise InputError("warp(labels=True) needs an integer label map")
        # float32 holds integers exactly up to 2^24; atlases stay far below
        out = _sample(vol.to(field.dtype), field, mode="nearest").round().to(volume.dtype)
    else:
        out = _sample(vol, field, mode="bilinear")
    return out[0] if squeeze else out
