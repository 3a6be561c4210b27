"""Separable Gaussian smoothing of 2D/3D torch arrays, shared by the detector blur of
:mod:`medimg.physics.xray` and the label-map image generator (:mod:`medimg.phantoms.synth`).

Written here rather than taken from MONAI's ``GaussianFilter`` because the generator calls it on
every sample with a few taps per axis, where shifted views beat a convolution several times on
the CPU (see :func:`gaussian_blur`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["gaussian_blur"]


def gaussian_blur(image: torch.Tensor, sigma: Sequence[float]) -> torch.Tensor:
    """Separable Gaussian blur of a 2D/3D array, ``sigma`` in voxels per axis (0 = none),
    borders extended by replication.

    Each axis is a weighted sum of shifted views of the padded array: for kernels of a few
    taps this is several times faster on the CPU than ``conv3d`` with a ``k x 1 x 1`` kernel.
    """
    out = image.float()
    for axis, s in enumerate(sigma):
        n = out.shape[axis]
        if s <= 0.05 or n < 2:
            continue
        radius = min(max(1, math.ceil(3 * s)), n - 1)
        x = torch.arange(-radius, radius + 1, dtype=torch.float64)
        kernel = torch.exp(-0.5 * (x / s) ** 2)
        out = _convolve_axis(out, (kernel / kernel.sum()).tolist(), axis)
    return out


def _convolve_axis(x: torch.Tensor, kernel: list[float], axis: int) -> torch.Tensor:
    """``x`` convolved along ``axis`` with an odd ``kernel``, borders replicated: the interior
    from shifted views (no padded copy), the few border slices with clamped indices."""
    n, r = x.shape[axis], len(kernel) // 2
    acc = torch.empty_like(x)
    inner = n - 2 * r
    if inner > 0:
        mid = acc.narrow(axis, r, inner)
        torch.mul(x.narrow(axis, 0, inner), kernel[0], out=mid)
        for t in range(1, len(kernel)):
            mid.add_(x.narrow(axis, t, inner), alpha=kernel[t])
    edges = list(range(min(r, n))) + list(range(max(r, n - r), n))
    for i in edges:
        out = acc.select(axis, i)
        out.zero_()
        for t, w in enumerate(kernel):
            out.add_(x.select(axis, min(max(i + t - r, 0), n - 1)), alpha=w)
    return acc
