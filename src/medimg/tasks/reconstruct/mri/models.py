"""Learned multi-coil MRI reconstruction: unrolled VarNet and MoDL, and a U-Net baseline.

Every network is called as ``net(y, physics)`` with undersampled k-space ``y`` complex64
``(B, N, H, W)`` and ``physics`` a :class:`~medimg.physics.mri.MultiCoilMRI` (mask and coil
maps), or, for the VarNet, which estimates its own maps, simply the mask (``(H, W)``,
``(W,)`` or ``(B, H, W)``). It returns the complex image ``(B, H, W)``; its magnitude is the
reconstruction (compared with fastMRI's RSS target). Inputs are scaled by ``s``, the peak of the
zero-filled RSS per item, before the network and the output is multiplied back, so the same
weights serve any k-space scaling.

* :class:`VarNet` (E2E-VarNet-style, Sriram et al. 2020, written in the image domain):
  maps ``S = R(C(F^H L y)) / RSS`` from the ACS-only coil images (``L`` keeps the ACS block,
  ``C`` a complex U-Net shared over coils); then ``x_0 = A^H y`` and ``T`` cascades
  ``x_{t+1} = x_t - eta_t A^H (A x_t - y) - g_t G_t(x_t)`` (soft data consistency with a
  learned step ``eta_t`` and a per-cascade complex U-Net ``G_t``), ``A = M F S``. The gains
  ``g_t`` (and the map refinement's) start at zero, so the untrained network is ``T`` gradient
  steps of SENSE with ACS maps; this made training on one CPU core converge several times faster.
* :class:`MoDL` (Aggarwal et al. 2019): one shared denoiser ``D``, ``K`` iterations of
  ``z = D(x_k)`` then ``x_{k+1} = (A^H A + lam I)^{-1} (A^H y + lam z)`` by conjugate gradients
  (:func:`medimg.physics.solvers.conjugate_gradient`), ``lam > 0`` learned; ``x_0`` is
  ``A^H y`` or, with ``init_iter``, CG-SENSE. The maps are first phase-aligned
  (:func:`align_phase`) so that ``D`` sees nearly real images whatever the maps' phase
  convention (true maps in training, ESPIRiT's at prediction).
* :class:`ZeroFilledUNet`: a complex (two-channel) U-Net on the coil-combined ``A^H y``.

The U-Nets are MONAI's ``ComplexUnet`` (BasicUNet on real/imaginary channels, padded to a
multiple of 16, with its own per-item normalisation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.apps.reconstruction.networks.nets.complex_unet import ComplexUnet
from monai.apps.reconstruction.networks.nets.utils import (
    complex_normalize,
    divisible_pad_t,
    inverse_divisible_pad_t,
    reshape_channel_complex_to_last_dim,
    reshape_complex_to_channel_dim,
)
from torch import nn

from medimg.errors import InputError
from medimg.physics.masks import acs_region
from medimg.physics.mri import MultiCoilMRI, check_kspace, fft2c, ifft2c, rss
from medimg.physics.solvers import conjugate_gradient

__all__ = ["MODELS", "MoDL", "ModelConfig", "VarNet", "ZeroFilledUNet", "build_model"]
__all__ += ["align_phase", "check_inputs", "lowres_phase"]

MODELS = ("varnet", "modl", "unet")
MAPS = ("acs", "espirit")


@dataclasses.dataclass
class ModelConfig:
    """Architecture of one network; round-trips to YAML inside the training config."""

    name: str = "varnet"
    cascades: int = 5  # VarNet cascades / MoDL iterations
    features: tuple[int, ...] = (8, 8, 16, 32, 64, 8)  # ComplexUnet's six widths
    sens_features: tuple[int, ...] = (4, 4, 8, 16, 32, 4)  # VarNet's sensitivity U-Net
    cg_iter: int = 5  # MoDL's CG steps per iteration
    maps: str = "acs"  # MoDL's coil maps: "acs" (from the ACS block) or "espirit" (given/estimated)
    init_iter: int = 0  # MoDL's start: CG-SENSE with this many CG steps (0: x_0 = A^H y)

    def __post_init__(self) -> None:
        if self.name not in MODELS:
            raise InputError(f"model must be one of {', '.join(MODELS)}, got {self.name!r}")
        for key in ("features", "sens_features"):
            v = getattr(self, key)
            if len(v) != 6 or min(v) < 1:
                raise InputError(f"ModelConfig.{key} needs six positive widths, got {v}")
        if self.maps not in MAPS:
            raise InputError(
                f"ModelConfig.maps must be one of {', '.join(MAPS)}, got {self.maps!r}"
            )
        if self.init_iter < 0:
            raise InputError(f"ModelConfig.init_iter must be >= 0, got {self.init_iter}")
        if self.cascades < 1 or self.cg_iter < 1:
            raise InputError(
                f"cascades and cg_iter must be >= 1, got {self.cascades}, {self.cg_iter}"
            )


def _unet(features: Sequence[int]) -> ComplexUnet:
    return ComplexUnet(spatial_dims=2, features=tuple(features))


class ResidualComplexUnet(ComplexUnet):
    """MONAI's ComplexUnet returning a residual: its output is scaled back by the input's
    standard deviation but without adding the input's mean back, so that with its last layer
    zeroed it returns exactly 0 (MONAI's returns the mean, which shifts the image)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = reshape_complex_to_channel_dim(x)
        x, _mean, std = complex_normalize(x)
        x, pad = divisible_pad_t(x, k=self.pad_factor)
        x = inverse_divisible_pad_t(self.unet(x), pad)
        return reshape_channel_complex_to_last_dim(x * std)


def _apply(unet: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Complex ``(B, H, W)`` through a MONAI ComplexUnet (``(B, 1, H, W, 2)`` layout)."""
    out = unet(torch.view_as_real(x)[:, None])
    return torch.view_as_complex(out[:, 0].contiguous())


def check_inputs(y: torch.Tensor, mask: torch.Tensor, need_acs: bool = False) -> None:
    """One-line :class:`InputError` for unusable inputs: real, NaN/Inf or wrongly shaped
    k-space, a mask that does not fit it, or (``need_acs``) a mask without a fully sampled
    centre from which coil maps could be estimated."""
    check_kspace(y)
    if y.ndim != 4:
        raise InputError(f"k-space must be multi-coil (B, N, H, W), got shape {tuple(y.shape)}")
    m = torch.as_tensor(mask)
    m = m[None] if m.ndim == 1 else m
    h, w = y.shape[-2:]
    if m.ndim not in (2, 3) or m.shape[-1] != w or m.shape[-2] not in (1, h) or (
        m.ndim == 3 and m.shape[0] not in (1, y.shape[0])
    ):  # fmt: skip
        raise InputError(
            f"mask shape {tuple(mask.shape)} does not match k-space shape {tuple(y.shape)}; "
            f"the mask must be (W,), (H, W) or (B, H, W) with H, W = {h}, {w}"
        )
    if not bool(torch.isfinite(m).all()) or not bool((m != 0).any()):
        raise InputError(
            "the mask samples no k-space line (or holds NaN), so there is nothing to "
            "reconstruct; give the mask of the sampled lines"
        )
    if need_acs:
        rows, cols = acs_region(m, (h, w))
        if cols.stop - cols.start < 2 or rows.stop - rows.start < 2:
            raise InputError(
                "the mask has no fully sampled centre (ACS lines), needed to estimate coil "
                "maps; sample the centre (center_fraction > 0) or give maps to MoDL/U-Net"
            )
    if not bool((y != 0).any()):
        raise InputError(
            "the k-space is all zero, so every image would be blank; check the file holds "
            "the measured data"
        )


class _MRINet(nn.Module):
    """Scaling, argument checks and the ``(y, physics)`` call shared by the networks."""

    needs_maps = True  # False: the mask alone will do (maps learned or taken from the ACS)
    learns_maps = False  # maps always come from the ACS block (so it must exist)

    def forward(self, y: torch.Tensor, physics: MultiCoilMRI | torch.Tensor) -> torch.Tensor:
        if isinstance(physics, MultiCoilMRI):
            mask, maps = physics.mask, physics.coil_maps
        elif isinstance(physics, torch.Tensor) and not self.needs_maps:
            mask, maps = physics, None
        else:
            raise InputError(
                f"{type(self).__name__} needs physics=MultiCoilMRI(coil_maps, mask) "
                "(maps e.g. from medimg.physics.coils.espirit_maps)"
            )
        check_inputs(y, mask, need_acs=self.learns_maps or maps is None)
        mask = mask.to(y.device).float()
        scale = rss(ifft2c(y), 1).flatten(1).amax(1).clamp_min(1e-12)  # (B,) zero-filled peak
        x = self._reconstruct(y / scale.view(-1, 1, 1, 1), mask, maps)
        return x * scale.view(-1, 1, 1)

    def _reconstruct(
        self, y: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor | None
    ) -> torch.Tensor:
        raise NotImplementedError


class SensitivityNet(nn.Module):
    """Coil maps from the ACS block: ``S_c = C(F^H L y_c) / sqrt(sum_c |C(F^H L y_c)|^2)``.

    Sensitivities are smooth, so the U-Net ``C`` runs on a grid ``factor`` times coarser: the
    ACS-only k-space is cropped to its centre, ``C`` is applied to the low-resolution coil
    images, and the result is sinc-interpolated back (zero-padded in k-space). This is the same
    band-limited map model ESPIRiT uses, at 1/16 of the full-grid cost for ``factor=4``.
    The U-Net refines the classical estimate (normalised ACS coil images) through a gain that
    starts at zero (ReZero), so training starts from working maps instead of random ones.
    """

    def __init__(self, features: Sequence[int], factor: int = 4) -> None:
        super().__init__()
        self.unet = _unet(features)
        self.factor = factor
        self.gain = nn.Parameter(torch.zeros(()))

    def forward(self, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, h, w = y.shape
        rows, cols = acs_region(mask, (h, w))
        low = torch.zeros(h, w, device=y.device)
        low[rows, cols] = 1.0  # keep the calibration block only: smooth coil images
        lh, lw = (
            min(s, max(32, 2 * (s // (2 * self.factor)))) for s in (h, w)
        )  # U-Net needs >= 32
        top, left = h // 2 - lh // 2, w // 2 - lw // 2  # keeps the centre sample centred
        crop = (y * low)[..., top : top + lh, left : left + lw]
        coil = ifft2c(crop).reshape(b * n, lh, lw)
        k = fft2c(coil + self.gain * _apply(self.unet, coil)).reshape(b, n, lh, lw)
        pad = (left, w - lw - left, top, h - lh - top)
        maps = ifft2c(torch.complex(F.pad(k.real, pad), F.pad(k.imag, pad)))
        return maps / rss(maps, 1).clamp_min(1e-12)[:, None]


class VarNet(_MRINet):
    """E2E-VarNet-style unrolled network with learned coil maps; see the module docstring.

    Examples
    --------
    >>> import torch
    >>> from medimg.physics.masks import equispaced_mask
    >>> net = VarNet(cascades=2)
    >>> y = torch.randn(1, 4, 32, 32, dtype=torch.complex64)
    >>> net(y, equispaced_mask((32, 32), 4, 0.16)).shape
    torch.Size([1, 32, 32])
    """

    needs_maps = False
    learns_maps = True

    def __init__(
        self,
        cascades: int = 5,
        features: Sequence[int] = (8, 8, 16, 32, 64, 8),
        sens_features: Sequence[int] = (4, 4, 8, 16, 32, 4),
    ) -> None:
        super().__init__()
        self.sens = SensitivityNet(sens_features)
        self.regs = nn.ModuleList(_unet(features) for _ in range(cascades))
        self.eta = nn.Parameter(torch.ones(cascades))
        self.gain = nn.Parameter(torch.zeros(cascades))

    def _reconstruct(
        self, y: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor | None
    ) -> torch.Tensor:
        op = MultiCoilMRI(self.sens(y, mask), mask, check_inputs=False)
        x = op.A_adjoint(y)
        for eta, gain, reg in zip(self.eta, self.gain, self.regs):
            x = x - eta * op.A_adjoint(op.A(x) - y) - gain * _apply(reg, x)
        return x


def acs_maps(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Classical coil maps from the ACS block: ACS-only coil images over their RSS.

    Used by :class:`MoDL` when no maps are given, in training and at inference alike (so the
    denoiser always sees images with the same phase convention). CG-SENSE with these maps was
    within 0.6 dB of the true maps on 128x128 8-coil phantoms at 4x.
    """
    h, w = y.shape[-2:]
    rows, cols = acs_region(mask, (h, w))
    low = torch.zeros(h, w, device=y.device)
    low[rows, cols] = 1.0
    coil = ifft2c(y * low)
    return coil / rss(coil, 1).clamp_min(1e-12)[:, None]


def lowres_phase(y: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """``e^{i phi}`` ``(B, H, W)``, ``phi`` the phase of the low-resolution SENSE image
    ``S^H F^H L y`` (``L`` keeps the ACS block); 1 where there is no low-resolution signal and
    everywhere for masks without ACS."""
    h, w = y.shape[-2:]
    rows, cols = acs_region(mask, (h, w))
    low = torch.zeros(h, w, device=y.device)
    low[rows, cols] = 1.0
    xl = (maps.conj() * ifft2c(y * low)).sum(1)  # (B, H, W) low-resolution SENSE image
    mag = xl.abs()
    keep = mag > 1e-6 * mag.flatten(1).amax(1).clamp_min(1e-30).view(-1, 1, 1)
    return torch.where(keep, xl / mag.clamp_min(1e-30), torch.ones_like(xl))


def align_phase(y: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """``maps`` times the phase of the low-resolution SENSE image (:func:`lowres_phase`), so
    that the image they reconstruct is nearly real and positive: ``S' = S e^{i phi}``.

    ``S' x' = S x`` for ``x' = x e^{-i phi}``, so the operator, CG-SENSE and every magnitude
    are unchanged; only the phase the denoiser sees is fixed. Without it a MoDL trained on the
    true maps saw the object's random smooth phase, and at prediction ESPIRiT's arbitrary phase
    convention instead: its denoiser learnt nothing that carried over (the ACS maps of the
    VarNet absorb the object phase the same way).
    """
    return maps * lowres_phase(y, mask, maps)[:, None]


class MoDL(_MRINet):
    """MoDL: shared denoiser alternated with CG data consistency; see the module docstring.

    The denoiser acts as ``z = x + g D(x)`` with ``D``'s last layer starting at zero, so the
    untrained network is a proximal-point SENSE solver. With ``maps="acs"`` it may be called with the
    mask alone and then uses :func:`acs_maps`; with ``maps="espirit"`` it needs maps (callers
    such as :class:`~medimg.tasks.reconstruct.mri.infer.Reconstructor` estimate them by ESPIRiT,
    which gave CG-SENSE 8 dB more than ACS maps on real brain slices at 4x).
    """

    def __init__(
        self,
        iterations: int = 5,
        features: Sequence[int] = (8, 8, 16, 32, 64, 8),
        cg_iter: int = 5,
        maps: str = "acs",
        init_iter: int = 0,
    ) -> None:
        super().__init__()
        self.needs_maps = maps == "espirit"
        self.init_iter = init_iter
        self.denoiser = ResidualComplexUnet(spatial_dims=2, features=tuple(features))
        # D starts at exactly zero through a zeroed last layer, with the gain at 1: the untrained
        # network is still proximal SENSE, but D's weights get gradients from step one. (A zero
        # gain with a random D left the gain at ~3e-4 after 200 steps on realistic slices.)
        final = self.denoiser.unet.final_conv
        nn.init.zeros_(final.weight)
        nn.init.zeros_(final.bias)
        self.iterations, self.cg_iter = iterations, cg_iter
        self.lam_raw = nn.Parameter(torch.tensor(0.5413))  # softplus -> lam = 1 at start
        self.gain = nn.Parameter(torch.ones(()))

    def _reconstruct(
        self, y: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor | None
    ) -> torch.Tensor:
        maps = acs_maps(y, mask) if maps is None else maps.to(y.device)
        phase = lowres_phase(y, mask, maps)  # the denoiser works on x e^{-i phi}: nearly real
        op = MultiCoilMRI(maps * phase[:, None], mask, check_inputs=False)
        lam = F.softplus(self.lam_raw)
        aty = op.A_adjoint(y)
        x = aty
        if self.init_iter:  # start from CG-SENSE: proximal steps from A^H y stay far below it
            x = conjugate_gradient(op.normal, aty, max_iter=self.init_iter)
        for _ in range(self.iterations):
            z = x + self.gain * _apply(self.denoiser, x)
            x = conjugate_gradient(
                lambda v: op.normal(v) + lam * v, aty + lam * z, x0=z, max_iter=self.cg_iter
            )
        return x * phase  # back to the caller's maps: A x = y holds with the maps given


class ZeroFilledUNet(_MRINet):
    """End-to-end complex U-Net on the SENSE-combined zero-filled image ``A^H y``."""

    def __init__(self, features: Sequence[int] = (16, 16, 32, 64, 128, 16)) -> None:
        super().__init__()
        self.unet = _unet(features)

    def _reconstruct(
        self, y: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor | None
    ) -> torch.Tensor:
        op = MultiCoilMRI(maps.to(y.device), mask, check_inputs=False)  # type: ignore[union-attr]
        return _apply(self.unet, op.A_adjoint(y))


def build_model(config: ModelConfig | str = "varnet", **overrides: object) -> _MRINet:
    """The network named by ``config`` (a :class:`ModelConfig` or a name plus overrides)."""
    cfg = ModelConfig(config, **overrides) if isinstance(config, str) else config  # type: ignore[arg-type]
    if cfg.name == "varnet":
        return VarNet(cfg.cascades, cfg.features, cfg.sens_features)
    if cfg.name == "modl":
        return MoDL(cfg.cascades, cfg.features, cfg.cg_iter, cfg.maps, cfg.init_iter)
    return ZeroFilledUNet(cfg.features)
