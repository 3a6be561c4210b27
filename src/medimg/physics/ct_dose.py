"""Hounsfield units <-> attenuation, and dose simulation in the transmission domain.

``mu = mu_water (1 + HU / 1000)`` with ``mu_water`` = :data:`MU_WATER` = 0.0193 / mm, water's
linear attenuation at a 70 keV effective energy (NIST XCOM, a 120 kVp spectrum's usual
equivalent); air (-1000 HU) is 0. A detector element behind line integral ``p`` (dimensionless:
``mu`` in 1/mm times mm) counts ``N ~ Poisson(I0 f exp(-p)) + Normal(0, sigma_e^2)`` photons at
incident flux ``I0`` (photons per element per view at full dose) and dose fraction ``f``;
counts below ``count_floor`` are clipped to it (no log of zero), and the measurement is
``p_hat = log(I0 f / N)``, whose variance is ``(lam + sigma_e^2) / lam^2`` with
``lam = I0 f exp(-p)`` (delta method), i.e. ``1 / lam`` without electronic noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from medimg.errors import InputError

__all__ = [
    "MU_WATER",
    "TransmissionNoise",
    "check_hu",
    "counts_to_line_integrals",
    "expected_variance",
    "hu_to_mu",
    "mu_to_hu",
    "simulate_sinogram",
]

MU_WATER = 0.0193  # 1/mm, water at 70 keV


def check_hu(image: Any, name: str = "image") -> None:
    """Raise :class:`InputError` unless ``image`` looks like CT in Hounsfield units.

    Refused: NaN/Inf; non-constant values all inside [-1, 1] (an image normalised to [0, 1] or
    [-1, 1] rather than HU); values below -3100 or above 40000 HU (stored values without the
    DICOM rescale, or not CT). Everything else passes, including crops without air.

    >>> check_hu(np.array([-1000.0, 0.0, 40.0]))
    >>> check_hu(np.array([0.0, 0.5, 1.0]))
    Traceback (most recent call last):
    ...
    medimg.errors.InputError: image values all lie in [-1, 1], not Hounsfield units ...
    """
    arr = image.detach().cpu().double().numpy() if torch.is_tensor(image) else np.asarray(image)
    arr = arr.astype(np.float64, copy=False)
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise InputError(f"{name} is empty or holds NaN/Inf; fix or mask those voxels first")
    lo, hi = float(arr.min()), float(arr.max())
    if -1.0 <= lo < hi <= 1.0:  # a constant image (all water, all air) is left alone
        raise InputError(
            f"{name} values all lie in [-1, 1], not Hounsfield units (air -1000, water 0); "
            "undo the normalisation or apply the DICOM rescale slope/intercept"
        )
    if lo < -3100 or hi > 40000:
        raise InputError(
            f"{name} ranges over [{lo:.0f}, {hi:.0f}], outside CT's Hounsfield range "
            "[-3100, 40000]; apply the DICOM rescale slope/intercept"
        )


def hu_to_mu(hu: torch.Tensor, mu_water: float = MU_WATER) -> torch.Tensor:
    """``mu = mu_water (1 + HU / 1000)`` in 1/mm, clamped at 0 (below air is air)."""
    return (mu_water * (1.0 + hu / 1000.0)).clamp_min(0.0)


def mu_to_hu(mu: torch.Tensor, mu_water: float = MU_WATER) -> torch.Tensor:
    """``HU = 1000 (mu - mu_water) / mu_water``.

    >>> mu_to_hu(hu_to_mu(torch.tensor([-1000.0, 0.0, 1000.0])))
    tensor([-1000.,     0.,  1000.])
    """
    return 1000.0 * (mu - mu_water) / mu_water


def _positive(name: str, value: float) -> float:
    if not float(value) > 0:
        raise InputError(f"{name} must be > 0, got {value}")
    return float(value)


def expected_variance(
    line_integrals: torch.Tensor, i0: float, dose_fraction: float = 1.0, electronic_std: float = 0.0
) -> torch.Tensor:
    """Delta-method variance of ``log(I0 f / N)``: ``(lam + sigma_e^2) / lam^2``."""
    lam = i0 * dose_fraction * torch.exp(-line_integrals)
    return (lam + electronic_std**2) / lam**2


def counts_to_line_integrals(
    counts: torch.Tensor, i0: float, *, count_floor: float = 1.0
) -> torch.Tensor:
    """``p = log(I0 / max(N, floor))`` from measured counts ``N >= 0`` (I0 per element)."""
    i0 = _positive("i0 (incident photons per detector element)", i0)
    counts = torch.as_tensor(counts)
    if not bool(torch.isfinite(counts).all()):
        raise InputError("counts hold NaN or Inf; fix or mask those detector readings")
    if bool((counts < 0).any()):
        raise InputError(
            f"counts must be >= 0 photons, got minimum {float(counts.min()):.3g}; "
            "subtract the dark offset and clip before calling, or pass raw counts"
        )
    return torch.log(i0 / counts.double().clamp_min(count_floor)).to(
        counts.dtype if counts.is_floating_point() else torch.float32
    )


class TransmissionNoise(nn.Module):
    """Poisson + electronic noise on line integrals; a ``noise`` module for ``CTProjector``.

    Parameters
    ----------
    i0
        Incident photons per detector element and view at full dose (e.g. 1e5 to 2e5).
    dose_fraction
        Fraction ``f`` of full dose; the flux becomes ``i0 * f``.
    electronic_std
        Standard deviation of the additive Gaussian electronic noise, in photon counts.
    count_floor
        Counts below this are clipped to it before the log.
    seed
        Seed of the module's own ``torch.Generator`` (one per device); :meth:`reset` restarts it.
    view_flux
        Optional relative flux per view, shape ``(n_views, 1)`` (mean 1): tube-current
        modulation; the flux of view ``v`` becomes ``i0 * f * view_flux[v]``.

    >>> noise = TransmissionNoise(1e4, dose_fraction=0.25, seed=1)
    >>> y = noise(torch.full((4, 1000), 2.0))
    >>> round(y.mean().item(), 1), noise(torch.zeros(3)).shape
    (2.0, torch.Size([3]))
    """

    def __init__(
        self,
        i0: float = 1e5,
        *,
        dose_fraction: float = 1.0,
        electronic_std: float = 5.0,
        count_floor: float = 1.0,
        seed: int = 0,
        view_flux: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.i0 = _positive("i0 (incident photons per detector element)", i0)
        self.dose_fraction = _positive("dose_fraction", dose_fraction)
        if not electronic_std >= 0:
            raise InputError(f"electronic_std must be >= 0 counts, got {electronic_std}")
        self.electronic_std = float(electronic_std)
        self.count_floor = _positive("count_floor", count_floor)
        self.seed = int(seed)
        if view_flux is not None and not bool((torch.as_tensor(view_flux) > 0).all()):
            raise InputError("view_flux must be > 0 for every view (relative tube current)")
        self.view_flux = None if view_flux is None else torch.as_tensor(view_flux).double()
        self._gens: dict[str, torch.Generator] = {}

    def reset(self) -> None:
        """Restart the random sequence from ``seed``."""
        self._gens.clear()

    def _gen(self, device: torch.device) -> torch.Generator:
        if str(device) not in self._gens:
            self._gens[str(device)] = torch.Generator(device=device).manual_seed(self.seed)
        return self._gens[str(device)]

    @torch.no_grad()
    def counts(self, line_integrals: torch.Tensor) -> torch.Tensor:
        """Simulated detector counts (clipped at ``count_floor``), same shape as the input."""
        p = torch.as_tensor(line_integrals)
        if not bool(torch.isfinite(p).all()):
            raise InputError("line integrals hold NaN or Inf; check the projected image")
        gen = self._gen(p.device)
        lam = self._flux(p) * torch.exp(-p.double())
        n = torch.poisson(lam, generator=gen)
        if self.electronic_std > 0:
            e = torch.randn(n.shape, generator=gen, device=n.device, dtype=n.dtype)
            n = n + self.electronic_std * e
        return n.clamp_min(self.count_floor)

    def _flux(self, p: torch.Tensor) -> torch.Tensor | float:
        flux = self.i0 * self.dose_fraction
        return flux if self.view_flux is None else flux * self.view_flux.to(p.device)

    def forward(self, line_integrals: torch.Tensor) -> torch.Tensor:
        """Noisy line integrals ``log(I0 f / N)``, dtype of the input."""
        n = self.counts(line_integrals)
        p = torch.log(self._flux(n) / n)
        return p.to(line_integrals.dtype if line_integrals.is_floating_point() else torch.float32)


def simulate_sinogram(
    image_hu: torch.Tensor,
    projector: nn.Module,
    *,
    dose_fraction: float = 1.0,
    i0: float = 1e5,
    electronic_std: float = 5.0,
    seed: int = 0,
    mu_water: float = MU_WATER,
) -> torch.Tensor:
    """Noisy line integrals of an HU image at ``dose_fraction`` of the flux ``i0``.

    ``image_hu`` ``(..., H, W)`` is checked with :func:`check_hu`, converted with
    :func:`hu_to_mu`, projected with ``projector.A`` (a ``CTProjector``) and passed through
    :class:`TransmissionNoise`. The same seed at two doses gives independent-looking noise.
    """
    check_hu(image_hu, "image_hu")
    image_hu = torch.as_tensor(image_hu)
    if not image_hu.is_floating_point():
        image_hu = image_hu.float()
    p = projector.A(hu_to_mu(image_hu, mu_water))  # type: ignore[operator]
    noise = TransmissionNoise(
        i0, dose_fraction=dose_fraction, electronic_std=electronic_std, seed=seed
    )
    return noise(p)
