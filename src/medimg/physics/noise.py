"""Noise models: modules with their own ``torch.Generator``, applied by an operator's ``forward``.

Each module draws from a generator seeded at construction (one per device, created on first
use), so simulations are reproducible and independent of the global RNG. Parameters are buffers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from medimg.errors import InputError

__all__ = ["ComplexGaussianNoise", "GaussianNoise", "coil_covariance"]


class _SeededNoise(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = int(seed)
        self._generators: dict[str, torch.Generator] = {}

    def manual_seed(self, seed: int) -> None:
        """Restart every device's stream from ``seed``."""
        self.seed = int(seed)
        self._generators.clear()

    def _generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    def _randn(self, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
        real = like.real.dtype if like.is_complex() else like.dtype
        gen = self._generator(like.device)
        return torch.randn(shape, generator=gen, dtype=real, device=like.device)


class GaussianNoise(_SeededNoise):
    """Real additive white Gaussian noise ``y + sigma z``, ``z ~ N(0, 1)``.

    Examples
    --------
    >>> import torch
    >>> noise = GaussianNoise(sigma=0.1, seed=0)
    >>> torch.equal(noise(torch.zeros(3)), GaussianNoise(sigma=0.1, seed=0)(torch.zeros(3)))
    True
    """

    sigma: torch.Tensor

    def __init__(self, sigma: float, seed: int = 0) -> None:
        super().__init__(seed)
        if not sigma >= 0:
            raise InputError(f"sigma must be >= 0, got {sigma}")
        self.register_buffer("sigma", torch.tensor(float(sigma)))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if y.is_complex():
            raise InputError("GaussianNoise is real-valued; use ComplexGaussianNoise for k-space")
        return y + self.sigma.to(y.dtype) * self._randn(y.shape, y)


def coil_covariance(num_coils: int, correlation: float) -> torch.Tensor:
    """Coil noise covariance with unit variances and correlation ``rho^|c - d|`` between coils.

    Neighbouring coils share more noise than distant ones, as in real receive arrays.
    """
    if not -1 < correlation < 1:
        raise InputError(f"coil correlation must be in (-1, 1), got {correlation}")
    idx = torch.arange(num_coils, dtype=torch.float64)
    return (correlation ** (idx[:, None] - idx[None, :]).abs()).to(torch.complex128)


class ComplexGaussianNoise(_SeededNoise):
    """Circular complex Gaussian noise ``y + sigma L z``, ``z ~ CN(0, I)``, ``L L^H = Psi``.

    Either ``sigma`` (total standard deviation per complex sample, ``sigma^2 / 2`` per real and
    imaginary part) or ``snr_db`` is given. With ``snr_db`` the level is set per batch item:
    ``sigma^2 = mean |y|^2 / 10^(snr_db / 10)``, the mean taken over non-zero (acquired)
    samples. ``coil_covariance`` (``(N, N)`` Hermitian positive definite, or a float ``rho`` for
    :func:`coil_covariance`) correlates noise across the coil axis ``coil_dim`` (``(B, N, ...)``
    k-space); it is normalised to unit mean variance so that ``sigma``/SNR keep their meaning.

    Examples
    --------
    >>> import torch
    >>> noise = ComplexGaussianNoise(snr_db=20.0, coil_covariance=0.3, seed=0)
    >>> noise(torch.ones(2, 4, 8, 8, dtype=torch.complex64)).shape
    torch.Size([2, 4, 8, 8])
    """

    sigma: torch.Tensor

    def __init__(
        self,
        sigma: float | None = None,
        snr_db: float | None = None,
        coil_covariance: torch.Tensor | float | None = None,
        coil_dim: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        if (sigma is None) == (snr_db is None):
            raise InputError("give exactly one of sigma (noise level) or snr_db (target SNR)")
        if sigma is not None and not sigma >= 0:
            raise InputError(f"sigma must be >= 0, got {sigma}")
        if snr_db is not None and not math.isfinite(snr_db):
            raise InputError(f"snr_db must be finite, got {snr_db}")
        self.snr_db = snr_db
        self.coil_dim = coil_dim
        self.register_buffer("sigma", torch.tensor(float(sigma or 0.0)))
        self._covariance = coil_covariance

    def _chol(self, num_coils: int, like: torch.Tensor) -> torch.Tensor | None:
        cov = self._covariance
        if cov is None:
            return None
        psi = coil_covariance(num_coils, cov) if isinstance(cov, float | int) else cov
        psi = torch.as_tensor(psi).to(torch.complex128)
        if psi.shape != (num_coils, num_coils):
            raise InputError(
                f"coil_covariance must be ({num_coils}, {num_coils}) to match the data's "
                f"{num_coils} coils, got {tuple(psi.shape)}"
            )
        try:
            if not torch.allclose(psi, psi.conj().T):
                raise RuntimeError("not Hermitian")
            chol = torch.linalg.cholesky(psi)
        except RuntimeError as err:
            raise InputError("coil_covariance must be Hermitian positive definite") from err
        chol = chol * math.sqrt(num_coils / psi.diagonal().real.sum())  # unit mean variance
        return chol.to(device=like.device, dtype=like.dtype)

    def noise_level(self, y: torch.Tensor) -> torch.Tensor:
        """``sigma`` per batch item, shaped to broadcast against ``y``."""
        shape = (y.shape[0],) + (1,) * (y.ndim - 1)
        if self.snr_db is None:
            return self.sigma.to(y.real.dtype).expand(shape)
        power = (y.real**2 + y.imag**2).reshape(y.shape[0], -1)
        acquired = (power > 0).sum(1).clamp_min(1)
        mean_power = power.sum(1) / acquired
        return torch.sqrt(mean_power / 10 ** (self.snr_db / 10)).reshape(shape)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if not y.is_complex():
            raise InputError(f"ComplexGaussianNoise needs complex data, got {y.dtype}")
        re = self._randn(y.shape, y)
        im = self._randn(y.shape, y)
        z = torch.complex(re, im) / math.sqrt(2)  # CN(0, 1): unit total variance
        chol = self._chol(y.shape[self.coil_dim], y) if self._covariance is not None else None
        if chol is not None:
            z = torch.movedim(z, self.coil_dim, -1)
            z = torch.movedim(z @ chol.T, -1, self.coil_dim)  # rows of z times L^T: cov L L^H
        return y + self.noise_level(y).to(y.real.dtype) * z
