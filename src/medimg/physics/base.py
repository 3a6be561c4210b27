"""The base class every forward model in :mod:`medimg.physics` derives from.

A linear operator ``A`` with its adjoint ``A^H``; ``forward(x) = noise(A(x))``. Reconstructors,
data-consistency layers and losses take an operator as an argument and never import a modality
file, so one unrolled network serves MRI, CT or any other linear inverse problem.
"""

from __future__ import annotations

import torch
from torch import nn


class LinearOperator(nn.Module):
    """``y = A x + n``. Subclasses implement :meth:`A` and :meth:`A_adjoint`.

    Masks, coil maps, angles and similar parameters are registered as buffers so they follow
    ``.to(device)``. ``noise`` is a separate module (or ``None``) with its own generator.
    """

    def __init__(self, noise: nn.Module | None = None) -> None:
        super().__init__()
        self.noise = noise

    def A(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Simulate a measurement: ``noise(A x)``."""
        y = self.A(x)
        return y if self.noise is None else self.noise(y)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A^H A x``, the operator inside CG and gradient steps."""
        return self.A_adjoint(self.A(x))

    @torch.no_grad()
    def adjointness_error(self, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
        """Relative dot-product test ``|<Ax, y> - <x, A^H y>| / (|Ax| |y|)``.

        ``x`` fixes the domain's shape, dtype and device; ``y`` defaults to random data shaped
        like ``A x``. Run it in float64/complex128 for a meaningful 1e-5 threshold.
        """
        ax = self.A(x)
        if y is None:
            gen = torch.Generator(device="cpu").manual_seed(0)
            y = torch.randn(ax.shape, generator=gen, dtype=ax.dtype).to(ax.device)
        lhs = torch.vdot(ax.flatten(), y.flatten())
        rhs = torch.vdot(x.flatten(), self.A_adjoint(y).flatten())
        scale = ax.flatten().norm() * y.flatten().norm()
        return float((lhs - rhs).abs() / scale.clamp_min(1e-30))

    @torch.no_grad()
    def operator_norm(self, x0: torch.Tensor, iterations: int = 50) -> float:
        """Largest singular value of ``A`` by power iteration on ``A^H A`` from ``x0``'s shape."""
        gen = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(x0.shape, generator=gen, dtype=x0.dtype).to(x0.device)
        x = x / x.flatten().norm()
        sigma2 = torch.zeros((), device=x0.device)
        for _ in range(iterations):
            z = self.normal(x)
            sigma2 = z.flatten().norm()
            x = z / sigma2.clamp_min(1e-30)
        return float(sigma2.sqrt())
