"""Generic solvers for linear inverse problems, batched over axis 0 and complex-safe.

They take an operator (or its normal map) as an argument and never import a modality, so MRI,
CT and unrolled networks (MoDL's data consistency) share them. All are plain torch and hence
differentiable when unrolled. Prox convention: ``prox(v, t) = argmin_z t g(z) + |z - v|^2 / 2``.

The sparsifying transforms live here too because they are priors, not physics: an orthonormal
periodic Daubechies wavelet (written in torch rather than taken from PyWavelets so that it stays
batched, on the tensor's device and differentiable, and is exactly unitary) and periodic finite
differences for total variation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from medimg.errors import InputError
from medimg.physics.base import LinearOperator

__all__ = [
    "FiniteDifference",
    "Wavelet2D",
    "admm",
    "conjugate_gradient",
    "fista",
    "group_soft_threshold",
    "soft_threshold",
]

Prox = Callable[[torch.Tensor, float], torch.Tensor]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner product ``<a, b> = sum conj(a) b`` over all axes but the first."""
    return (a.conj() * b).reshape(a.shape[0], -1).sum(1)


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def conjugate_gradient(
    normal: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    x0: torch.Tensor | None = None,
    max_iter: int = 10,
    tol: float = 0.0,
) -> torch.Tensor:
    """Solve ``normal(x) = rhs`` for a Hermitian positive (semi-)definite map, per batch item.

    Each item ``rhs[b]`` gets its own step sizes. Iteration stops after ``max_iter`` steps, or
    earlier once every item has ``|r| <= tol |rhs|`` (``tol = 0`` never stops early, which keeps
    unrolled networks' cost fixed).

    Examples
    --------
    >>> import torch
    >>> a = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    >>> x = conjugate_gradient(lambda v: v @ a, torch.tensor([[1.0, 2.0]], dtype=torch.float64))
    >>> torch.allclose(x @ a, torch.tensor([[1.0, 2.0]], dtype=torch.float64))
    True
    """
    x = torch.zeros_like(rhs) if x0 is None else x0
    r = rhs if x0 is None else rhs - normal(x0)
    p = r
    rs = _dot(r, r).real
    target = tol**2 * _dot(rhs, rhs).real
    for _ in range(max_iter):
        if tol > 0 and bool((rs <= target).all()):
            break
        ap = normal(p)
        pap = _dot(p, ap).real
        alpha = rs / pap.clamp_min(1e-30) * (pap > 0)  # converged items stop moving
        x = x + _bcast(alpha, x).to(x.dtype) * p
        r = r - _bcast(alpha, r).to(r.dtype) * ap
        rs_new = _dot(r, r).real
        beta = rs_new / rs.clamp_min(1e-30) * (rs > 0)
        p = r + _bcast(beta, p).to(p.dtype) * p
        rs = rs_new
    return x


def soft_threshold(x: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """``prox`` of ``threshold * |x|_1``: shrink magnitudes, keep phases (complex-safe)."""
    mag = x.abs()
    return x * torch.clamp(1 - threshold / mag.clamp_min(1e-30), min=0)


def group_soft_threshold(
    x: torch.Tensor, threshold: float | torch.Tensor, dim: int = 1
) -> torch.Tensor:
    """``prox`` of ``threshold * sum |x_g|_2`` with groups along ``dim`` (isotropic TV)."""
    norm = torch.sqrt((x.real**2 + x.imag**2 if x.is_complex() else x**2).sum(dim, keepdim=True))
    return x * torch.clamp(1 - threshold / norm.clamp_min(1e-30), min=0)


def fista(
    op: LinearOperator,
    y: torch.Tensor,
    prox: Prox,
    max_iter: int = 50,
    step: float | None = None,
    x0: torch.Tensor | None = None,
) -> torch.Tensor:
    """FISTA for ``min_x |A x - y|^2 / 2 + g(x)`` (Beck & Teboulle 2009).

    ``step`` defaults to ``1 / |A|^2`` from power iteration; ``x0`` to ``A^H y``.
    """
    x = op.A_adjoint(y) if x0 is None else x0
    if step is None:
        step = 1.0 / op.operator_norm(x, iterations=30) ** 2
    z, t = x, 1.0
    for _ in range(max_iter):
        x_new = prox(z - step * op.A_adjoint(op.A(z) - y), step)
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        z = x_new + ((t - 1) / t_new) * (x_new - x)
        x, t = x_new, t_new
    return x


def admm(
    op: LinearOperator,
    y: torch.Tensor,
    transform: LinearOperator,
    prox: Prox,
    rho: float = 1.0,
    max_iter: int = 30,
    cg_iter: int = 5,
    x0: torch.Tensor | None = None,
) -> torch.Tensor:
    """ADMM for ``min_x |A x - y|^2 / 2 + g(G x)`` with the split ``z = G x`` (Boyd et al. 2011).

    The x-step solves ``(A^H A + rho G^H G) x = A^H y + rho G^H (z - u)`` by warm-started CG.
    """
    aty = op.A_adjoint(y)
    x = aty if x0 is None else x0
    z = transform.A(x)
    u = torch.zeros_like(z)

    def normal(v: torch.Tensor) -> torch.Tensor:
        return op.normal(v) + rho * transform.normal(v)

    for _ in range(max_iter):
        x = conjugate_gradient(normal, aty + rho * transform.A_adjoint(z - u), x, cg_iter)
        gx = transform.A(x)
        z = prox(gx + u, 1.0 / rho)
        u = u + gx - z
    return x


class FiniteDifference(LinearOperator):
    """Periodic forward differences over the last ``ndim`` axes: ``(B, *s) -> (B, ndim, *s)``.

    ``(D x)_d = x[i + e_d] - x[i]``; the adjoint is the negative backward difference. Isotropic
    TV is ``sum_i |(D x)_i|_2``, whose prox on ``D x`` is :func:`group_soft_threshold`.
    """

    def __init__(self, ndim: int = 2) -> None:
        super().__init__()
        self.ndim = ndim

    def A(self, x: torch.Tensor) -> torch.Tensor:
        dims = range(x.ndim - self.ndim, x.ndim)
        return torch.stack([torch.roll(x, -1, d) - x for d in dims], 1)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        parts = y.unbind(1)
        dims = range(parts[0].ndim - self.ndim, parts[0].ndim)
        out = sum(torch.roll(g, 1, d) - g for g, d in zip(parts, dims))
        return out  # type: ignore[return-value]


_FILTERS = {  # orthonormal low-pass reconstruction filters (Daubechies 1992)
    "haar": [1 / math.sqrt(2), 1 / math.sqrt(2)],
    "db2": [
        (1 + math.sqrt(3)) / (4 * math.sqrt(2)),
        (3 + math.sqrt(3)) / (4 * math.sqrt(2)),
        (3 - math.sqrt(3)) / (4 * math.sqrt(2)),
        (1 - math.sqrt(3)) / (4 * math.sqrt(2)),
    ],
    "db4": [
        0.2303778133088965, 0.7148465705529157, 0.6308807679298589, -0.027983769416859854,
        -0.18703481171909309, 0.030841381835560764, 0.0328830116668852, -0.010597401785069032,
    ],
}  # fmt: skip


class Wavelet2D(LinearOperator):
    """Orthonormal periodic 2D discrete wavelet transform over the last two axes.

    ``(B, H, W) -> (B, H, W)`` in the usual pyramid layout (coarse approximation in the top-left
    ``H / 2^L x W / 2^L`` block). Unitary, so ``A_adjoint`` is the inverse. ``H`` and ``W`` must
    be divisible by ``2^levels``.

    Examples
    --------
    >>> import torch
    >>> w = Wavelet2D("db4", levels=2)
    >>> x = torch.randn(1, 16, 24, dtype=torch.complex128)
    >>> torch.allclose(w.A_adjoint(w.A(x)), x)
    True
    """

    def __init__(self, wavelet: str = "db4", levels: int = 3) -> None:
        super().__init__()
        if wavelet not in _FILTERS:
            raise InputError(f"wavelet must be one of {sorted(_FILTERS)}, got {wavelet!r}")
        lo = torch.tensor(_FILTERS[wavelet], dtype=torch.float64)
        sign = torch.tensor([(-1.0) ** k for k in range(lo.numel())], dtype=torch.float64)
        self.levels = levels
        self.register_buffer("lo", lo)
        self.register_buffer("hi", sign * lo.flip(0))  # quadrature mirror filter

    def _check(self, x: torch.Tensor) -> None:
        k = 2**self.levels
        if x.shape[-1] % k or x.shape[-2] % k:
            raise InputError(
                f"Wavelet2D with {self.levels} levels needs H and W divisible by {k}, got "
                f"{tuple(x.shape[-2:])}; pad the image or use fewer levels"
            )

    def _analysis(self, x: torch.Tensor) -> torch.Tensor:  # along the last axis
        taps = self.lo.numel()
        ext = torch.cat([x, x[..., : taps - 1]], -1) if taps > 1 else x
        while ext.shape[-1] < x.shape[-1] + taps - 1:  # signals shorter than the filter
            ext = torch.cat([ext, x], -1)
        win = ext[..., : x.shape[-1] + taps - 1].unfold(-1, taps, 2)  # (..., n/2, taps)
        lo, hi = self.lo.to(x.real.dtype), self.hi.to(x.real.dtype)
        return torch.cat([(win * lo).sum(-1), (win * hi).sum(-1)], -1)

    def _synthesis(self, c: torch.Tensor) -> torch.Tensor:  # inverse of _analysis
        half = c.shape[-1] // 2
        lo, hi = self.lo.to(c.real.dtype), self.hi.to(c.real.dtype)
        contrib = c[..., :half, None] * lo + c[..., half:, None] * hi  # (..., n/2, taps)
        even = sum(torch.roll(contrib[..., m], m // 2, -1) for m in range(0, lo.numel(), 2))
        odd = sum(torch.roll(contrib[..., m], m // 2, -1) for m in range(1, lo.numel(), 2))
        return torch.stack([even, odd], -1).reshape(*c.shape)  # type: ignore[list-item]

    def _level(self, x: torch.Tensor, inverse: bool) -> torch.Tensor:
        f = self._synthesis if inverse else self._analysis
        return f(f(x).transpose(-1, -2)).transpose(-1, -2)

    def _transform(self, x: torch.Tensor, level: int, inverse: bool) -> torch.Tensor:
        if level == self.levels:
            return x
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        x = x if inverse else self._level(x, False)
        top = torch.cat([self._transform(x[..., :h, :w], level + 1, inverse), x[..., :h, w:]], -1)
        x = torch.cat([top, x[..., h:, :]], -2)
        return self._level(x, True) if inverse else x

    def A(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self._transform(x, 0, inverse=False)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check(y)
        return self._transform(y, 0, inverse=True)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``W^H W = I`` (unitary): no transform needed."""
        return x

    def detail_mask(self, shape: tuple[int, ...]) -> torch.Tensor:
        """``(H, W)`` float mask: 1 on detail coefficients, 0 on the coarse approximation."""
        mask = torch.ones(shape[-2:])
        mask[: shape[-2] >> self.levels, : shape[-1] >> self.levels] = 0
        return mask
