"""The Fourier-slice machinery of :class:`medimg.physics.ct.CTProjector` (``method="fourier"``)
and of :class:`medimg.physics.ct_fbp.FBP`'s back-projection: a 2D non-uniform FFT
(:class:`_NUFFT`, gridding with an exponential-of-semicircle kernel) and the parallel-beam
spectra on every view's radial line (:class:`_FourierSlice`).

Written here rather than taken from a library: the NUFFT packages (finufft, torchkbnufft) are
not dependencies, and this one needs an exact adjoint in torch, differentiable to any order,
on any device, for a fixed set of frequencies reused on every call.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from medimg.physics.ct import ParallelBeamGeometry

__all__: list[str] = []  # private helpers of medimg.physics.ct and medimg.physics.ct_fbp


def _fft_len(n: int) -> int:
    """Smallest even ``2^a 3^b 5^c >= n``: sizes the FFTs run fast at."""
    best = 2 ** math.ceil(math.log2(max(n, 2)))
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n or p % 2:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def _wrap_pad(x: torch.Tensor, w: int, dim: int) -> torch.Tensor:
    """Periodic extension by ``w`` on both sides of ``dim``; :func:`_fold` is its adjoint."""
    n = x.shape[dim]
    return torch.cat([x.narrow(dim, n - w, w), x, x.narrow(dim, 0, w)], dim)


def _fold(y: torch.Tensor, w: int, dim: int) -> torch.Tensor:
    """Add the ``w`` wrapped entries on each side back onto the period (adjoint of pad)."""
    n = y.shape[dim] - 2 * w
    top = y.narrow(dim, w, w) + y.narrow(dim, n + w, w)
    bottom = y.narrow(dim, n, w) + y.narrow(dim, 0, w)
    return torch.cat([top, y.narrow(dim, 2 * w, n - 2 * w), bottom], dim)


class _NUFFT:
    """Non-uniform FFT between an ``(H, W)`` pixel grid and fixed frequencies ``omega``.

    Type 2 ``F_j = sum_n x[n] exp(-i omega_j . n)`` and its exact adjoint, type 1
    ``x[n] = sum_j c_j exp(+i omega_j . n)``, with ``n`` the centred pixel index
    ``(row - H // 2, col - W // 2)`` and ``omega`` (rad per pixel, rows then columns). Gridding
    on a 2x oversampled grid with the "exponential of semicircle" kernel of ``width`` taps per
    axis (Barnett, Magland & af Klinteberg, SIAM J. Sci. Comput. 2019): relative error about
    ``10^(1 - width)``, ``width^2`` operations per frequency plus one FFT of the oversampled
    grid. The taps form a sparse ``(M, grid)`` matrix (``width^2`` entries a row, 8 bytes each),
    built once per device/dtype: type 2 is one sparse product, type 1 a scatter-add.
    """

    def __init__(self, shape: tuple[int, int], omega: torch.Tensor, width: int = 6) -> None:
        self.shape, self.width = shape, int(width)
        self.grid = tuple(_fft_len(2 * n) for n in shape)
        self.padded = tuple(g + 2 * width for g in self.grid)  # taps past an edge: wrapped
        self.beta = 2.30 * width  # FINUFFT's kernel shape for 2x oversampling
        starts, deltas, corrections = [], [], []
        nodes, qw = _gauss_legendre(4 * width)
        phi = self._kernel(nodes, self.beta) * qw * (width / 2)  # quadrature of its transform
        for ax, (n, g) in enumerate(zip(shape, self.grid, strict=True)):
            x = torch.remainder(omega[:, ax].double() / (2 * math.pi), 1.0) * g  # grid units
            i0 = torch.ceil(x - width / 2)
            deltas.append(i0 - x)  # first tap's offset, in [-width/2, 1 - width/2)
            starts.append(i0.long() + width)
            k = torch.arange(n, dtype=torch.float64) - n // 2
            arg = 2 * math.pi * k[:, None] * nodes[None] * (width / 2) / g
            corrections.append((phi[None] * torch.cos(arg)).sum(1))
        self.n_points = int(omega.shape[0])
        self._base = starts[0] * self.padded[1] + starts[1]
        self._delta = torch.stack(deltas, 1)  # (M, 2)
        self._corr = 1.0 / (corrections[0][:, None] * corrections[1][None, :])  # (H, W)
        self._on: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, ...]] = {}

    @staticmethod
    def _kernel(z: torch.Tensor, beta: float) -> torch.Tensor:
        return torch.exp(beta * (torch.sqrt((1 - z * z).clamp_min(0)) - 1)) * (z.abs() < 1)

    def operands(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """(sparse interpolation matrix, its column indices, its values, correction) on a device."""
        key = (device, dtype)
        if key not in self._on:
            wd, p1 = self.width, self.padded[1]
            t = torch.arange(wd, device=device)
            taps = (t[:, None] * p1 + t[None, :]).reshape(-1).to(torch.int32)
            cols = (self._base.to(device, torch.int32)[:, None] + taps).reshape(-1)
            z = (self._delta.to(device, dtype)[..., None] + t.to(dtype)) * (2 / wd)  # (M, 2, w)
            w = self._kernel(z, self.beta)
            vals = (w[:, 0, :, None] * w[:, 1, None, :]).reshape(-1)
            crow = torch.arange(0, cols.numel() + 1, wd * wd, device=device, dtype=torch.int32)
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                mat = torch.sparse_csr_tensor(
                    crow, cols, vals, size=(self.n_points, p1 * self.padded[0]),
                    check_invariants=False,
                )  # fmt: skip
            self._on[key] = (mat, cols, vals, self._corr.to(device, dtype))
        return self._on[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Type 2: images ``(C, H, W)`` (real or complex) -> ``(C, M)`` complex."""
        ops = self.operands(x.device, x.real.dtype)
        (g0, g1), wd, c = self.grid, self.width, x.shape[0]
        (h, w), (r, q) = self.shape, (self.shape[0] // 2, self.shape[1] // 2)
        x = x * ops[3]
        cdt = torch.complex128 if x.real.dtype == torch.float64 else torch.complex64
        full = torch.zeros(c, g0, g1, dtype=cdt, device=x.device)
        full[:, g0 - r :, g1 - q :] = x[:, :r, :q]  # centred index n sits at n mod g
        full[:, g0 - r :, : w - q] = x[:, :r, q:]
        full[:, : h - r, g1 - q :] = x[:, r:, :q]
        full[:, : h - r, : w - q] = x[:, r:, q:]
        spec = torch.view_as_real(torch.fft.fft2(full)).permute(1, 2, 0, 3)  # (g0, g1, C, 2)
        spec = _wrap_pad(_wrap_pad(spec, wd, 0), wd, 1).reshape(-1, 2 * c)
        out = _Interp.apply(spec, self).reshape(-1, c, 2)
        return torch.view_as_complex(out.contiguous()).T

    def adjoint(self, coef: torch.Tensor) -> torch.Tensor:
        """Type 1: coefficients ``(C, M)`` complex -> ``(C, H, W)`` complex."""
        ops = self.operands(coef.device, coef.real.dtype)
        (g0, g1), (p0, p1), wd, c = self.grid, self.padded, self.width, coef.shape[0]
        (h, w), (r, q) = self.shape, (self.shape[0] // 2, self.shape[1] // 2)
        real = torch.view_as_real(coef.T.contiguous()).reshape(-1, 2 * c)  # (M, 2C)
        grid = _Spread.apply(real, self).reshape(p0, p1, c, 2)
        grid = _fold(_fold(grid, wd, 0), wd, 1).permute(2, 0, 1, 3)
        spec = torch.fft.ifft2(torch.view_as_complex(grid.contiguous()), norm="forward")
        rows = torch.cat([spec[:, g0 - r :], spec[:, : h - r]], 1)
        return torch.cat([rows[:, :, g1 - q :], rows[:, :, : w - q]], 2) * ops[3]


class _Interp(torch.autograd.Function):
    """Grid ``(P, K)`` -> values at the frequencies ``(M, K)``; backward is :class:`_Spread`."""

    @staticmethod
    def forward(ctx, grid: torch.Tensor, nu: _NUFFT) -> torch.Tensor:  # type: ignore[override]
        ctx.nu = nu
        return nu.operands(grid.device, grid.dtype)[0] @ grid

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return _Spread.apply(g, ctx.nu), None


class _Spread(torch.autograd.Function):
    """The exact transpose of :class:`_Interp`: values ``(M, K)`` -> grid ``(P, K)``."""

    @staticmethod
    def forward(ctx, vals: torch.Tensor, nu: _NUFFT) -> torch.Tensor:  # type: ignore[override]
        ctx.nu = nu
        _, cols, wts, _ = nu.operands(vals.device, vals.dtype)
        taps, k = nu.width**2, vals.shape[1]
        out = vals.new_zeros(k, nu.padded[0] * nu.padded[1])
        step = max(1, 2**21 // (taps * k))  # points per chunk: temporaries of ~8 MB
        src = vals.T
        for a in range(0, vals.shape[0], step):
            b = min(a + step, vals.shape[0])
            idx = cols[a * taps : b * taps].long()
            contrib = src[:, a:b, None] * wts[a * taps : b * taps].view(b - a, taps)
            out.scatter_add_(1, idx.expand(k, -1), contrib.reshape(k, -1))
        return out.T

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return _Interp.apply(g.contiguous(), ctx.nu), None


def _gauss_legendre(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np

    nodes, weights = np.polynomial.legendre.leggauss(n)
    return torch.from_numpy(nodes), torch.from_numpy(weights)


class _FourierSlice:
    """Parallel-beam projections through the Fourier slice theorem, for one geometry.

    For each view ``theta`` and frequency index ``k`` (``0 <= k < L / 2``) the 2D DTFT of the
    image at ``xi_k theta``, ``xi_k = 2 pi k / (L tau)`` (rad/mm, ``tau`` the detector pitch),
    times a phase that puts the rotation axis at ``det_center``: ``spectra`` maps an image to
    these ``(C, V, L/2)`` spectra and ``image`` is its exact adjoint (type-1 NUFFT, real part),
    which is a back-projection of trigonometrically interpolated projections of period ``L``.
    """

    def __init__(self, g: ParallelBeamGeometry, period: int, width: int = 6) -> None:
        (h, w), (r0, c0), d = g.image_shape, g.iso_center, g.pixel_size  # type: ignore[misc]
        self.period, self.n_freq = int(period), int(period) // 2
        xi = 2 * math.pi * torch.arange(self.n_freq, dtype=torch.float64) / (period * g.det_unit)
        ang = g.angles()[:, None]
        om_col = (xi * ang.cos() * d).reshape(-1)  # rad per pixel; rows run against y
        om_row = (-xi * ang.sin() * d).reshape(-1)
        self.nufft = _NUFFT((h, w), torch.stack([om_row, om_col], 1), width)
        # centred pixel index -> pixel offset from the axis; the axis at detector det_center
        shift = om_col * (w // 2 - c0) + om_row * (h // 2 - r0)
        shift = shift.reshape(g.n_views, -1) + (xi * g.det_unit * g.det_center)[None]  # type: ignore[operator]
        self.phase = torch.polar(torch.ones_like(shift), -shift)  # (V, L/2) complex128
        self.xi_col = (xi * ang.cos()).reshape(g.n_views, -1)
        self.xi_row = (xi * ang.sin()).reshape(g.n_views, -1)
        self._phase: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def _ph(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (device, dtype)
        if key not in self._phase:
            self._phase[key] = self.phase.to(device, dtype)
        return self._phase[key]

    def spectra(self, x: torch.Tensor) -> torch.Tensor:
        """Real images ``(C, H, W)`` -> ``(C, V, L/2)``: ``sum_pixels x exp(-i xi_k u tau)``, ``u``
        the pixel's detector coordinate (element index); ``irfft`` of it gives projections."""
        cdt = torch.complex128 if x.dtype == torch.float64 else torch.complex64
        f = self.nufft.forward(x).reshape(x.shape[0], *self.phase.shape)
        return f * self._ph(x.device, cdt)

    def image(self, spec: torch.Tensor) -> torch.Tensor:
        """Adjoint of :meth:`spectra`: ``(C, V, L/2)`` complex -> real ``(C, H, W)``."""
        c = (spec * self._ph(spec.device, spec.dtype).conj()).reshape(spec.shape[0], -1)
        return self.nufft.adjoint(c).real
