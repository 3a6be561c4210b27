"""Classical MRI reconstructions: zero-filled RSS, CG-SENSE and compressed sensing (L1-wavelet, TV).

All take batched Cartesian k-space, multi-coil ``(B, N, H, W)`` or single-coil ``(B, H, W)``
(complex64, zero where not sampled), a mask broadcastable to it (:mod:`medimg.physics.masks`)
and, for multi-coil data, coil maps ``(N, H, W)``/``(B, N, H, W)``; without maps they are
estimated from the ACS block by ESPIRiT (an ``InputError`` if the mask has none). They return
complex ``(B, H, W)`` images except :func:`zero_filled`, which returns the RSS magnitude.

Regularisation weights ``lam`` are relative: they multiply the peak of ``|A^H y|`` per item, so
the same value works whatever the k-space scaling of a scanner or file.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from medimg.errors import InputError
from medimg.physics.base import LinearOperator
from medimg.physics.coils import espirit_maps
from medimg.physics.mri import MultiCoilMRI, SingleCoilMRI, check_kspace, ifft2c, rss
from medimg.physics.solvers import (
    FiniteDifference,
    Wavelet2D,
    admm,
    conjugate_gradient,
    group_soft_threshold,
    soft_threshold,
)

__all__ = ["cg_sense", "cs_tv", "cs_wavelet", "mri_operator", "zero_filled"]


def zero_filled(kspace: torch.Tensor) -> torch.Tensor:
    """Root-sum-of-squares of the coil images (``(B, N, H, W)``), or the magnitude of a
    single-coil image (``(B, H, W)``): float ``(B, H, W)``.

    Examples
    --------
    >>> import torch
    >>> zero_filled(torch.ones(2, 4, 8, 6, dtype=torch.complex64)).shape
    torch.Size([2, 8, 6])
    """
    check_kspace(kspace)
    if kspace.ndim not in (3, 4):
        raise InputError(
            f"kspace must be (B, N, H, W) or (B, H, W), got shape {tuple(kspace.shape)}"
        )
    img = ifft2c(kspace)
    return rss(img, 1) if kspace.ndim == 4 else img.abs()


def mri_operator(
    kspace: torch.Tensor, mask: torch.Tensor, coil_maps: torch.Tensor | None = None
) -> LinearOperator:
    """The operator ``A`` matching ``kspace``; ESPIRiT maps from the ACS block when none given.

    ``kspace``, mask and maps are validated here once; the operator itself skips the per-call
    NaN check, which would otherwise cost a pass over k-space in every solver iteration.
    """
    check_kspace(kspace)
    m = torch.as_tensor(mask, device=kspace.device)
    if kspace.ndim == 3:
        op: LinearOperator = SingleCoilMRI(m, check_inputs=False)
    elif kspace.ndim == 4:
        maps = espirit_maps(kspace, m) if coil_maps is None else coil_maps
        op = MultiCoilMRI(torch.as_tensor(maps).to(kspace.device), m, check_inputs=False)
    else:
        raise InputError(
            f"kspace must be (B, N, H, W) or (B, H, W), got shape {tuple(kspace.shape)}"
        )
    op.A_adjoint(kspace)  # validates mask/maps against the k-space before any iteration
    return op


def _scale(x: torch.Tensor) -> torch.Tensor:
    """Per-item peak magnitude, shaped ``(B, 1, 1)``."""
    return x.abs().reshape(x.shape[0], -1).amax(1).clamp_min(1e-12).reshape(-1, 1, 1)


def cg_sense(
    kspace: torch.Tensor,
    mask: torch.Tensor,
    coil_maps: torch.Tensor | None = None,
    max_iter: int = 30,
    tol: float = 1e-6,
    lam: float = 0.0,
) -> torch.Tensor:
    """CG-SENSE (Pruessmann et al. 2001): solve ``(A^H A + lam I) x = A^H y`` by conjugate
    gradients, ``A = M F S``. ``lam`` is an absolute Tikhonov weight (0: plain SENSE).

    Examples
    --------
    >>> import torch
    >>> from medimg.physics.coils import birdcage_maps
    >>> from medimg.physics.masks import equispaced_mask
    >>> from medimg.physics.mri import MultiCoilMRI
    >>> maps, mask = birdcage_maps(8, (32, 32)), equispaced_mask((32, 32), 2, 0.25)
    >>> x = torch.rand(1, 32, 32, dtype=torch.complex64)
    >>> y = MultiCoilMRI(maps, mask).A(x)
    >>> bool((cg_sense(y, mask, maps, max_iter=60) - x).abs().max() < 1e-3)
    True
    """
    op = mri_operator(kspace, mask, coil_maps)

    def normal(v: torch.Tensor) -> torch.Tensor:
        return op.normal(v) + lam * v

    return conjugate_gradient(normal, op.A_adjoint(kspace), max_iter=max_iter, tol=tol)


class _Padded(LinearOperator):
    """``A P^T``: ``op`` applied to the top-left ``shape`` crop of a zero-padded image."""

    def __init__(self, op: LinearOperator, shape: tuple[int, int], padded: tuple[int, int]):
        super().__init__()
        self.op, self.shape, self.pad = (
            op,
            shape,
            (0, padded[1] - shape[1], 0, padded[0] - shape[0]),
        )

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return self.op.A(x[..., : self.shape[0], : self.shape[1]])

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        x = self.op.A_adjoint(y)
        return torch.complex(F.pad(x.real, self.pad), F.pad(x.imag, self.pad))


def cs_wavelet(
    kspace: torch.Tensor,
    mask: torch.Tensor,
    coil_maps: torch.Tensor | None = None,
    lam: float = 3e-4,
    max_iter: int = 30,
    rho: float = 0.005,
    cg_iter: int = 5,
    wavelet: str = "db4",
    levels: int = 3,
) -> torch.Tensor:
    """Compressed sensing with an L1-wavelet prior (Lustig et al. 2007):
    ``min_x |A x - y|^2 / 2 + lam s |W x|_1`` (``s`` the peak of ``|A^H y|``; the coarse
    approximation is not penalised), solved by ADMM with CG inner steps (:func:`admm`), which
    converges much faster than FISTA on the ill-conditioned SENSE normal equations.

    ``W`` is the orthonormal periodic Daubechies transform of :class:`Wavelet2D`; the image is
    zero-padded to a multiple of ``2^levels`` and cropped back. Defaults were tuned on brain and
    knee phantoms at 4x equispaced sampling, 8 coils.
    """
    op = mri_operator(kspace, mask, coil_maps)
    h, w = kspace.shape[-2:]
    k = 2**levels
    padded = (math.ceil(h / k) * k, math.ceil(w / k) * k)
    pop = _Padded(op, (h, w), padded)
    wav = Wavelet2D(wavelet, levels).to(kspace.device)
    weight = lam * _scale(pop.A_adjoint(kspace)) * wav.detail_mask(padded).to(kspace.device)

    def prox(v: torch.Tensor, step: float) -> torch.Tensor:
        return soft_threshold(v, step * weight)

    x = admm(pop, kspace, wav, prox, rho=rho, max_iter=max_iter, cg_iter=cg_iter)
    return x[..., :h, :w]


def cs_tv(
    kspace: torch.Tensor,
    mask: torch.Tensor,
    coil_maps: torch.Tensor | None = None,
    lam: float = 1e-3,
    max_iter: int = 30,
    rho: float = 0.01,
    cg_iter: int = 5,
) -> torch.Tensor:
    """Compressed sensing with isotropic total variation, solved by ADMM with CG inner steps:
    ``min_x |A x - y|^2 / 2 + lam s sum_i |(D x)_i|_2`` (``s`` the peak of ``|A^H y|``).
    Defaults tuned as for :func:`cs_wavelet`.
    """
    op = mri_operator(kspace, mask, coil_maps)
    tv = FiniteDifference(2)
    weight = lam * _scale(op.A_adjoint(kspace)).unsqueeze(1)  # (B, 1, 1, 1) against (B, 2, H, W)

    def prox(v: torch.Tensor, step: float) -> torch.Tensor:
        return group_soft_threshold(v, step * weight, dim=1)

    return admm(op, kspace, tv, prox, rho=rho, max_iter=max_iter, cg_iter=cg_iter)
