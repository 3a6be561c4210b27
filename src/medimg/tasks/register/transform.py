"""The spatial transformer: dense displacement fields in voxels inside, in mm at the edges.

Tensors are batched ``(B, C, X, Y[, Z])``; a displacement field ``u`` is ``(B, nd, X, Y[, Z])``
with channel ``i`` the displacement along array axis ``i`` in voxels (MONAI's ``Warp``/``DVF2DDF``
convention), and warping means ``warped(x) = moving(x + u(x))``. At the edges fields are
converted to world millimetres (RAS+) with the grid's affine (:func:`to_mm` / :func:`to_voxels`),
so a field means the same thing on any voxel grid and in ITK (see :mod:`.fields`).

* :func:`warp` — ``grid_sample`` with MONAI ``Warp``'s conventions (bilinear or nearest, border
  or zero padding, ``align_corners=True``). Our own few lines rather than MONAI's block because
  ``Warp`` rebuilds and renormalises its sampling grid on every call (the squaring steps call it
  many times); with the normalised identity grid cached per shape here, a 96^3 registration went
  from 0.54 to 0.42 CPU s. The tests check it against scipy's ``map_coordinates``.
* :func:`compose` — the field of "warp by ``first``, then warp the result by ``second``".
* :func:`integrate` — scaling and squaring of a stationary velocity field (as MONAI's
  ``DVF2DDF``, on :func:`warp`); ``integrate(-v)`` is the inverse transform, which is how the
  diffeomorphic models get inverse consistency.
* :func:`affine_field` — the displacement of a voxel-space affine map.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medimg.errors import InputError

__all__ = [
    "affine_field",
    "compose",
    "identity_grid",
    "integrate",
    "residual_field",
    "resize_field",
    "to_mm",
    "to_voxels",
    "warp",
]


@functools.lru_cache(maxsize=32)
def _sampling_grid(
    shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """The identity in ``grid_sample``'s layout ``(1, *S, nd)`` (last axis first, in [-1, 1]) and
    the per-component scale from voxels to that range."""
    scale = torch.tensor([2.0 / max(n - 1, 1) for n in reversed(shape)], device=device, dtype=dtype)
    base = identity_grid(shape, device, dtype).movedim(0, -1).flip(-1) * scale - 1
    return base[None].contiguous(), scale


def _check(image: torch.Tensor, field: torch.Tensor) -> None:
    nd = field.ndim - 2
    if nd not in (2, 3) or field.shape[1] != nd:
        raise InputError(
            f"a field must be (B, nd, *spatial) with nd = 2 or 3, got {tuple(field.shape)}"
        )
    if image.ndim != field.ndim or image.shape[2:] != field.shape[2:]:
        raise InputError(
            f"image {tuple(image.shape)} and field {tuple(field.shape)} need the same batch layout "
            "and spatial shape"
        )


def warp(
    image: torch.Tensor, field: torch.Tensor, mode: str = "bilinear", padding: str = "border"
) -> torch.Tensor:
    """``image(x + field(x))`` for ``(B, C, *S)`` images and ``(B, nd, *S)`` voxel fields.

    ``mode``: ``bilinear`` (images, one-hot labels) or ``nearest`` (label maps); ``padding``:
    ``border`` (repeat the edge), ``zeros`` or ``reflection``.
    """
    _check(image, field)
    if mode not in ("bilinear", "nearest") or padding not in ("border", "zeros", "reflection"):
        raise InputError(f"warp mode/padding must be bilinear|nearest and border|zeros|reflection, "
                         f"got {mode!r}/{padding!r}")  # fmt: skip
    # the cache keys on concrete sizes: torch.export (medimg export) traces symbolic ones
    grid_of = _sampling_grid.__wrapped__ if torch.compiler.is_exporting() else _sampling_grid
    base, scale = grid_of(tuple(field.shape[2:]), field.device, field.dtype)
    grid = base + field.movedim(1, -1).flip(-1) * scale
    return F.grid_sample(image.to(field.dtype), grid, mode=mode, padding_mode=padding,
                         align_corners=True)  # fmt: skip


def compose(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Field of warping by ``first`` and then warping the result by ``second``:
    ``c(x) = second(x) + first(x + second(x))``, so ``warp(warp(m, first), second) ≈ warp(m, c)``."""
    return second + warp(first, second, padding="border")


def residual_field(total: torch.Tensor, first: torch.Tensor, iterations: int = 10) -> torch.Tensor:
    """The field ``r`` with ``compose(first, r) = total``: what remains after warping by ``first``
    (e.g. the true field a refinement stage must add to a coarse stage's). Solved by the
    fixed-point iteration ``r <- total - first(x + r)``, which converges when ``first`` is smooth
    (its Jacobian's norm below 1), as the fields of a diffeomorphic stage are."""
    r = total - first
    for _ in range(int(iterations)):
        r = total - warp(first, r, padding="border")
    return r


def integrate(velocity: torch.Tensor, steps: int = 7) -> torch.Tensor:
    """Displacement of ``exp(v)`` for a stationary velocity field (scaling and squaring)."""
    if velocity.ndim - 2 not in (2, 3) or velocity.shape[1] != velocity.ndim - 2:
        raise InputError(f"a velocity field must be (B, nd, *spatial), got {tuple(velocity.shape)}")
    if steps <= 0:
        return velocity
    disp = velocity / 2 ** int(steps)
    for _ in range(int(steps)):
        disp = disp + warp(disp, disp)
    return disp


def identity_grid(shape: tuple[int, ...], device: Any = None, dtype: Any = None) -> torch.Tensor:
    """Voxel coordinates ``(nd, *shape)``: the points where a field is defined."""
    axes = [torch.arange(s, device=device, dtype=dtype or torch.float32) for s in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def affine_field(matrix: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Displacement ``(B, nd, *shape)`` of voxel affine maps ``x -> A x + t`` given as
    ``(B, nd, nd+1)`` or ``(B, nd+1, nd+1)`` matrices acting on voxel indices."""
    nd = len(shape)
    m = matrix[:, :nd, :]
    grid = identity_grid(shape, matrix.device, matrix.dtype).reshape(nd, -1)
    mapped = m[:, :, :nd] @ grid + m[:, :, nd:]
    return (mapped - grid).reshape(matrix.shape[0], nd, *shape)


def resize_field(field: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Resample a voxel field to another grid over the same extent (voxel centres aligned like
    average pooling, ``align_corners=False``), rescaling the displacements per axis."""
    mode = "bilinear" if field.ndim == 4 else "trilinear"
    out = F.interpolate(field, size=shape, mode=mode, align_corners=False)
    scale = torch.tensor([n / o for n, o in zip(shape, field.shape[2:])], dtype=field.dtype)
    return out * scale.to(field.device).reshape(1, -1, *[1] * len(shape))


def _linear(affine: Any, nd: int) -> np.ndarray:
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise InputError(f"affine must be 4x4, got {a.shape}")
    return a[:nd, :nd]


def to_mm(field_vox: Any, affine: Any) -> np.ndarray:
    """Voxel field ``(nd, *S)`` or ``(1, nd, *S)`` -> world mm components ``M u``, ``(nd, *S)``."""
    u = (
        field_vox.detach().cpu().numpy()
        if isinstance(field_vox, torch.Tensor)
        else np.asarray(field_vox)
    )
    if u.ndim >= 4 and u.shape[0] == 1 and u.shape[1] == u.ndim - 2:
        u = u[0]
    nd = u.shape[0]
    if u.ndim != nd + 1:
        raise InputError(f"a field must be (nd, *spatial) with nd channels, got {u.shape}")
    return np.tensordot(_linear(affine, nd), u.astype(np.float64), axes=1).astype(np.float32)


def to_voxels(field_mm: Any, affine: Any) -> torch.Tensor:
    """World-mm field ``(nd, *S)`` -> batched voxel field ``(1, nd, *S)`` (torch float32)."""
    u = np.asarray(field_mm, dtype=np.float64)
    nd = u.shape[0]
    if u.ndim != nd + 1:
        raise InputError(f"a field must be (nd, *spatial) with nd channels, got {u.shape}")
    inv = np.linalg.inv(_linear(affine, nd))
    return torch.from_numpy(np.tensordot(inv, u, axes=1).astype(np.float32))[None]
