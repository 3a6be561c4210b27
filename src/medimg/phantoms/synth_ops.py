"""Small torch building blocks of the label-map generator (:mod:`medimg.phantoms.synth`):
seeded generators, uniform draws, separable Gaussian blur, identity grids and smooth noise.

They work on the device of their inputs and draw every random number from the generator they
are given, so a sample is a function of its seed alone (on a given device).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from medimg.errors import InputError
from medimg.physics.smoothing import gaussian_blur

__all__ = ["gaussian_blur", "identity_grid", "make_generator", "smooth_noise", "uniform"]


def make_generator(seed: int | torch.Generator, device: torch.device | str) -> torch.Generator:
    """``seed`` as a generator on ``device``: an int seeds a new one, a generator is used as it
    is (and must live on ``device``, as torch requires for drawing there)."""
    dev = torch.device(device)
    if isinstance(seed, torch.Generator):
        if seed.device.type != dev.type:
            raise InputError(f"the generator lives on {seed.device} but the data on {dev}; "
                             "pass torch.Generator(device=...) on the data's device or an int")  # fmt: skip
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed must be an int or a torch.Generator, got {type(seed).__name__}")
    return torch.Generator(device=dev).manual_seed(int(seed))


def uniform(
    gen: torch.Generator, shape: Sequence[int], low: float, high: float, device: torch.device
) -> torch.Tensor:
    """Uniform draws in ``[low, high)`` (``low`` everywhere when the range is empty)."""
    return low + (high - low) * torch.rand(tuple(shape), generator=gen, device=device)


def identity_grid(shape: Sequence[int], device: torch.device | str) -> torch.Tensor:
    """Voxel coordinates ``(ndim, *shape)``, float32."""
    axes = [torch.arange(int(n), device=device, dtype=torch.float32) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def smooth_noise(
    shape: Sequence[int], lattice: Sequence[int], gen: torch.Generator, std: float
) -> torch.Tensor:
    """Gaussian noise of standard deviation ``std`` drawn on a coarse lattice (``lattice``
    points per axis, at least 2) and interpolated (cubic in 2D, linear in 3D) to ``shape``:
    a smooth random function whose feature size is about ``shape / lattice``."""
    shape = [int(n) for n in shape]
    coarse = [max(2, min(int(g), n)) for g, n in zip(lattice, shape)]
    dev = gen.device
    noise = std * torch.randn([1, 1, *coarse], generator=gen, device=dev)
    mode = "bicubic" if len(shape) == 2 else "trilinear"
    return F.interpolate(noise, size=shape, mode=mode, align_corners=True)[0, 0]
