"""MRI forward models: centered orthonormal FFTs, single-coil and multi-coil (SENSE) operators.

Layout (complex tensors, no real/imag channel):

* image ``x``: ``(B, H, W)`` (2D) or ``(B, D, H, W)`` (3D), complex64 (float32 is promoted);
* k-space ``y``: ``(B, H, W)`` single-coil, ``(B, N, H, W)`` multi-coil (fastMRI's
  ``(slices, coils, H, W)``), complex64; the last ``ndim`` axes are Fourier axes;
* mask ``M``: real, broadcast against k-space's trailing axes: ``(H, W)``, a fastMRI line mask
  ``(W,)`` or ``(1, W)``, or one mask per sample ``(B, H, W)``;
* coil maps ``S``: ``(N, H, W)`` shared, or ``(B, N, H, W)`` per sample.

The FFT is centered (DC at index ``n // 2``) and orthonormal as in fastMRI: ``F^H = F^{-1}``.
"""

from __future__ import annotations

import torch
from torch import nn

from medimg.errors import InputError
from medimg.physics.base import LinearOperator

__all__ = ["MultiCoilMRI", "SingleCoilMRI", "check_kspace", "fftnc", "ifftnc", "rss"]
__all__ += ["fft2c", "fft3c", "ifft2c", "ifft3c"]


def fftnc(x: torch.Tensor, ndim: int = 2) -> torch.Tensor:
    """Centered orthonormal FFT over the last ``ndim`` axes: ``fftshift(fft(ifftshift(x)))``."""
    dims = tuple(range(-ndim, 0))
    x = torch.fft.ifftshift(x, dim=dims)
    return torch.fft.fftshift(torch.fft.fftn(x, dim=dims, norm="ortho"), dim=dims)


def ifftnc(y: torch.Tensor, ndim: int = 2) -> torch.Tensor:
    """Centered orthonormal inverse FFT over the last ``ndim`` axes (adjoint of :func:`fftnc`)."""
    dims = tuple(range(-ndim, 0))
    y = torch.fft.ifftshift(y, dim=dims)
    return torch.fft.fftshift(torch.fft.ifftn(y, dim=dims, norm="ortho"), dim=dims)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centered orthonormal 2D FFT over the last two axes."""
    return fftnc(x, 2)


def ifft2c(y: torch.Tensor) -> torch.Tensor:
    """Centered orthonormal 2D inverse FFT over the last two axes."""
    return ifftnc(y, 2)


def fft3c(x: torch.Tensor) -> torch.Tensor:
    """Centered orthonormal 3D FFT over the last three axes."""
    return fftnc(x, 3)


def ifft3c(y: torch.Tensor) -> torch.Tensor:
    """Centered orthonormal 3D inverse FFT over the last three axes."""
    return ifftnc(y, 3)


def rss(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Root-sum-of-squares coil combination ``sqrt(sum_c |x_c|^2)`` along ``dim`` (real output)."""
    return torch.sqrt((x.real**2 + x.imag**2).sum(dim) if x.is_complex() else (x**2).sum(dim))


def check_kspace(kspace: torch.Tensor, name: str = "kspace") -> torch.Tensor:
    """Reject non-tensor, real-valued or non-finite k-space with a one-line :class:`InputError`."""
    if not isinstance(kspace, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(kspace).__name__}")
    if not kspace.is_complex():
        raise InputError(
            f"{name} must be complex (complex64), got {kspace.dtype}; "
            "join real/imaginary parts with torch.complex(re, im) or torch.view_as_complex"
        )
    if not bool(torch.isfinite(kspace).all()):
        raise InputError(f"{name} contains NaN or Inf values; remove or zero them before use")
    return kspace


def _as_complex(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_complex():
        return x
    if not x.is_floating_point():
        raise InputError(f"{name} must be float or complex, got {x.dtype}")
    return x.to(torch.complex128 if x.dtype == torch.float64 else torch.complex64)


def _mask_buffer(mask: torch.Tensor, ndim: int) -> torch.Tensor:
    """Mask as ``(Bm, *spatial)`` with singleton axes kept (``(W,)`` becomes ``(1, 1, W)``)."""
    m = torch.as_tensor(mask)
    if m.is_complex() or m.ndim == 0 or m.ndim > ndim + 1:
        raise InputError(
            f"mask must be real with {ndim} spatial axes (plus an optional batch axis), "
            f"got dtype {m.dtype} and shape {tuple(m.shape)}"
        )
    m = m.float() if m.dtype in (torch.bool, torch.uint8, torch.int32, torch.int64) else m
    return m.reshape((1,) * (ndim + 1 - m.ndim) + tuple(m.shape))


class _MRIBase(LinearOperator):
    """Mask handling, shape checks and ``forward = M noise(A x)`` shared by the MRI operators."""

    mask: torch.Tensor

    coil_axis = False  # multi-coil k-space has a coil axis the mask broadcasts over

    def __init__(
        self,
        mask: torch.Tensor,
        ndim: int = 2,
        noise: nn.Module | None = None,
        check_inputs: bool = True,
    ) -> None:
        super().__init__(noise)
        if ndim not in (2, 3):
            raise InputError(f"ndim must be 2 or 3, got {ndim}")
        self.ndim = ndim
        self.check_inputs = check_inputs
        self.register_buffer("mask", _mask_buffer(mask, ndim))

    def _check_spatial(self, shape: tuple[int, ...], batch: int, what: str) -> None:
        spatial = tuple(shape[-self.ndim :])
        bad = any(m not in (1, s) for m, s in zip(self.mask.shape[1:], spatial))
        if bad or self.mask.shape[0] not in (1, batch):
            raise InputError(
                f"mask shape {tuple(self.mask.shape)} does not match {what} shape {tuple(shape)}; "
                f"the mask's trailing axes must equal the k-space's {spatial} (or be 1)"
            )

    def _mask_for(self, y: torch.Tensor) -> torch.Tensor:
        return self.mask.to(dtype=y.real.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Simulate a measurement ``M (A x + n)``: noise only where k-space was sampled."""
        y = self.A(x)
        return y if self.noise is None else self._apply_mask(self.noise(y))

    def _apply_mask(self, y: torch.Tensor) -> torch.Tensor:
        m = self._mask_for(y)
        return y * (m.unsqueeze(1) if self.coil_axis else m)


class SingleCoilMRI(_MRIBase):
    """Single-coil Cartesian MRI: ``y = M F x``.

    ``F`` is the centered orthonormal FFT over the last ``ndim`` axes and ``M`` a real sampling
    mask, so ``A^H y = F^H (M y)``. Image ``(B, H, W)`` or ``(B, D, H, W)`` -> k-space of the
    same shape, complex.

    Parameters
    ----------
    mask
        Sampling mask (1 = acquired), broadcast against k-space's trailing axes; see the module
        docstring for the accepted shapes. Stored as a buffer (follows ``.to(device)``).
    ndim
        2 or 3 Fourier axes.
    noise
        Optional noise module applied in :meth:`forward` (e.g. ``ComplexGaussianNoise``).
    check_inputs
        Reject real or non-finite k-space in :meth:`A_adjoint` (one-line ``InputError``).

    Examples
    --------
    >>> import torch
    >>> from medimg.physics.mri import SingleCoilMRI
    >>> mask = torch.zeros(37, 31); mask[:, ::2] = 1
    >>> op = SingleCoilMRI(mask)
    >>> op.A(torch.ones(2, 37, 31)).dtype
    torch.complex64
    >>> op.adjointness_error(torch.randn(2, 37, 31, dtype=torch.complex128)) < 1e-5
    True
    """

    def A(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_complex(x, "image")
        self._check_spatial(tuple(x.shape), x.shape[0], "image")
        return self._apply_mask(fftnc(x, self.ndim))  # (B, *spatial)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        if self.check_inputs:
            check_kspace(y)
        self._check_spatial(tuple(y.shape), y.shape[0], "k-space")
        return ifftnc(self._apply_mask(y), self.ndim)  # (B, *spatial)


class MultiCoilMRI(_MRIBase):
    """Multi-coil Cartesian MRI (SENSE): ``y_c = M F (S_c x)`` for coils ``c = 1..N``.

    ``A^H y = sum_c conj(S_c) F^H (M y_c)``. Image ``(B, H, W)`` (``(B, D, H, W)`` with
    ``ndim=3``) -> k-space ``(B, N, H, W)`` (``(B, N, D, H, W)``). Maps and mask are fixed.

    Parameters
    ----------
    coil_maps
        Complex sensitivities ``(N, *spatial)`` shared by the batch or ``(B, N, *spatial)``.
        Stored as a buffer; its dtype is matched to the image's at each call.
    mask
        Sampling mask as for :class:`SingleCoilMRI`, shared by all coils.
    ndim, noise, check_inputs
        As for :class:`SingleCoilMRI`.

    Examples
    --------
    >>> import torch
    >>> from medimg.physics.mri import MultiCoilMRI
    >>> maps = torch.randn(4, 37, 31, dtype=torch.complex64)
    >>> mask = torch.ones(31); mask[1::2] = 0
    >>> op = MultiCoilMRI(maps, mask)
    >>> op.A(torch.ones(2, 37, 31)).shape
    torch.Size([2, 4, 37, 31])
    >>> op.adjointness_error(torch.randn(2, 37, 31, dtype=torch.complex128)) < 1e-5
    True
    """

    coil_maps: torch.Tensor
    coil_axis = True

    def __init__(
        self,
        coil_maps: torch.Tensor,
        mask: torch.Tensor,
        ndim: int = 2,
        noise: nn.Module | None = None,
        check_inputs: bool = True,
    ) -> None:
        super().__init__(mask, ndim, noise, check_inputs)
        maps = _as_complex(torch.as_tensor(coil_maps), "coil_maps")
        maps = maps.unsqueeze(0) if maps.ndim == ndim + 1 else maps
        if maps.ndim != ndim + 2:
            raise InputError(
                f"coil_maps must be (N, *spatial) or (B, N, *spatial) with {ndim} spatial axes, "
                f"got shape {tuple(maps.shape)}"
            )
        self.register_buffer("coil_maps", maps)  # (Bs, N, *spatial)
        self._check_spatial(tuple(maps.shape), self.mask.shape[0], "coil_maps")
        # For even sizes the centred FFT is s C F C (C the (-1)^(i+j) checkerboard, s = +-1):
        # C folded into the maps and s C into the mask save the two shift copies of every FFT
        # (a third of the time of A^H A). Odd sizes keep the shifts.
        spatial = maps.shape[2:]
        self.modulated = all(n % 2 == 0 for n in spatial)
        checker, sign = torch.ones(()), 1.0
        if self.modulated:
            grids = torch.meshgrid(*[torch.arange(n) for n in spatial], indexing="ij")
            checker = 1.0 - 2 * (torch.stack(grids).sum(0) % 2).float()
            sign = -1.0 if sum(n // 2 for n in spatial) % 2 else 1.0
        self.register_buffer("_maps_c", maps * checker.to(maps.dtype), persistent=False)
        self.register_buffer("_mask_c", self.mask * (sign * checker), persistent=False)

    @property
    def num_coils(self) -> int:
        return int(self.coil_maps.shape[1])

    def _signed_mask(self, y: torch.Tensor) -> torch.Tensor:
        return y * self._mask_c.to(y.real.dtype).unsqueeze(1)  # (Bm, 1, *s) on (B, N, *s)

    def _check_maps(self, shape: tuple[int, ...], batch: int, what: str) -> None:
        maps = self.coil_maps.shape
        if tuple(shape[-self.ndim :]) != tuple(maps[2:]) or maps[0] not in (1, batch):
            raise InputError(
                f"coil_maps shape {tuple(maps)} does not match {what} shape {tuple(shape)}; "
                "estimate or simulate the maps on the same grid as the k-space"
            )

    def _coil_kspace(self, x: torch.Tensor) -> torch.Tensor:
        """Unmasked ``F S x`` (modulated: plain FFT of ``C S x``): ``(B, N, *spatial)``."""
        sx = self._maps_c.to(x.dtype) * x.unsqueeze(1)
        if not self.modulated:
            return fftnc(sx, self.ndim)
        return torch.fft.fftn(sx, dim=tuple(range(-self.ndim, 0)), norm="ortho")

    def _combine(self, y: torch.Tensor) -> torch.Tensor:
        """``sum_c conj(S_c) F^H y_c`` (modulated: ``C S`` and the plain FFT): ``(B, *spatial)``."""
        dims = tuple(range(-self.ndim, 0))
        img = torch.fft.ifftn(y, dim=dims, norm="ortho") if self.modulated else ifftnc(y, self.ndim)
        return (self._maps_c.to(y.dtype).conj() * img).sum(1)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_complex(x, "image")
        self._check_maps(tuple(x.shape), x.shape[0], "image")
        self._check_spatial(tuple(x.shape), x.shape[0], "image")
        return self._signed_mask(self._coil_kspace(x))

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        if self.check_inputs:
            check_kspace(y)
        if y.ndim != self.ndim + 2 or y.shape[1] != self.num_coils:
            n, shape = self.num_coils, tuple(y.shape)
            raise InputError(f"multi-coil k-space must be (B, {n}, *spatial), got shape {shape}")
        self._check_maps(tuple(y.shape), y.shape[0], "k-space")
        self._check_spatial(tuple(y.shape), y.shape[0], "k-space")
        return self._combine(self._signed_mask(y))

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A^H A x = sum_c conj(S_c) F^H M^2 F S_c x``: one mask product, no checks."""
        x = _as_complex(x, "image")
        self._check_maps(tuple(x.shape), x.shape[0], "image")
        return self._combine(self._coil_kspace(x) * (self._mask_for(x) ** 2).unsqueeze(1))
