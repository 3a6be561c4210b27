"""Projection radiography (chest PA/AP, CR/DX) from a 3D attenuation volume, in torch.

The forward model, step by step (each a function here, device-agnostic and differentiable
where it is deterministic):

1. :func:`hu_to_mu`: linear attenuation at one *effective energy* from CT numbers,
   ``mu = mu_water (1 + HU / 1000)`` (clipped at 0 for air). The default
   :data:`MU_WATER_PER_MM` is water at :data:`EFFECTIVE_KEV` = 60 keV (NIST XCOM
   mu/rho = 0.2059 cm^2/g), about the mean energy of a filtered 120 kVp chest beam behind the
   patient. A single energy ignores beam hardening; it also ignores that bone attenuates
   relatively more at low energy than this water-scaled line (HU already carries that at the
   CT's own energy).
2. :func:`project`: line integrals ``p = integral mu dl`` through the volume ``(..., X, Y, Z)``
   laid out in RAS+ index order (``canonical()`` of an :class:`~medimg.io.image.Image`), i.e.
   axis 1 runs posterior to anterior. ``PA``: the source behind the patient, the detector in
   front; ``AP``: the reverse. ``parallel`` beams (a sum over the antero-posterior axis: exact
   for voxelised volumes) or a ``cone`` from a point source at ``sid_mm`` from the detector
   (magnification: structures near the source appear larger, so the heart is larger on an AP
   film). Rays are sampled once per volume plane ``y_j`` with bilinear interpolation in the
   plane and step ``dy / cos(angle)``; outside the volume is air.
3. :func:`expose`: counts ``I = I0 exp(-p)`` plus scatter (a low-pass copy of the primary,
   ``scatter_fraction`` of the total on a uniform field), detector blur (Gaussian, mm), then
   Poisson counting or its Gaussian approximation and electronic noise.
4. :func:`log_image`: ``-log(I / I0)``, the flat-field-corrected log image detectors store
   (dense structures high).
5. :func:`to_stored` / :func:`from_stored`: the display conventions of CR/DX DICOM images:
   a linear window ``(center, width)`` onto ``bits``-bit integers, MONOCHROME2 (the highest
   value is white: dense = bright) or MONOCHROME1 (the lowest value is white, the inverse).

Radiographs are ``(..., U, V)``, our channel-first layout: ``u`` runs to the patient's left
(image right, as a chest film is viewed for both PA and AP), ``v`` down (inferior).

Nodules are inserted into a log image by adding their own line integral
(:func:`nodule_line_integral`, analytic chords of a sphere or ellipsoid): line integrals add, so
``p + (mu_nodule - mu_displaced) * chord`` is the log image of the same patient with the nodule,
whether the background was simulated or read from a real radiograph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from medimg.errors import InputError

__all__ = ["EFFECTIVE_KEV", "MU_WATER_PER_MM", "NODULE_KINDS", "Geometry", "expose",
           "from_stored", "hu_to_mu", "insert_nodule", "log_image", "nodule_line_integral",
           "project", "to_stored"]  # fmt: skip

EFFECTIVE_KEV = 60.0
MU_WATER_PER_MM = 0.02059  # water at 60 keV, 1/mm (NIST XCOM)
#: CT numbers of the nodule kinds: a solid one, a part-solid one's ground-glass shell and its
#: solid core, a calcified one (dense calcium through most of it).
NODULE_KINDS: dict[str, tuple[float, ...]] = {
    "solid": (40.0,),
    "part_solid": (-450.0, 40.0),
    "calcified": (700.0,),
}
LUNG_HU = -850.0  # the aerated lung a nodule displaces


def hu_to_mu(hu: torch.Tensor, mu_water: float = MU_WATER_PER_MM) -> torch.Tensor:
    """Linear attenuation (1/mm) at the effective energy from CT numbers (module doc)."""
    return (mu_water * (1.0 + torch.as_tensor(hu, dtype=torch.float32) / 1000.0)).clamp_min(0.0)


@dataclass(frozen=True)
class Geometry:
    """A radiographic exposure. ``detector_shape`` ``(U, V)`` and ``pixel_mm`` ``(du, dv)``
    default to the volume's ``(X, Z)`` grid, magnified to the detector for a cone beam;
    ``sod_mm`` (source to the volume's centre) defaults to ``sid_mm - 150``, a chest against
    the detector."""

    view: Literal["PA", "AP"] = "PA"
    beam: Literal["parallel", "cone"] = "parallel"
    sid_mm: float = 1800.0  # PA chest: 180 cm; an AP bedside film: about 100 cm
    sod_mm: float | None = None
    detector_shape: tuple[int, int] | None = None
    pixel_mm: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.view not in ("PA", "AP") or self.beam not in ("parallel", "cone"):
            raise InputError(f"view must be PA or AP and beam parallel or cone, got "
                             f"{self.view!r}, {self.beam!r}")  # fmt: skip
        sod = self.sid_mm - 150.0 if self.sod_mm is None else self.sod_mm
        if self.beam == "cone" and not 0 < sod < self.sid_mm:
            raise InputError(f"need 0 < sod_mm < sid_mm, got {sod} and {self.sid_mm}")


def project(
    mu: torch.Tensor, spacing: Sequence[float], geometry: Geometry = Geometry()
) -> torch.Tensor:
    """Line integrals ``(..., U, V)`` of ``mu`` ``(..., X, Y, Z)`` (RAS+ index order, 1/mm,
    ``spacing`` mm) for ``geometry`` (module doc)."""
    if mu.ndim < 3 or len(spacing) != 3:
        raise InputError(f"need a volume (..., X, Y, Z) and 3 spacings, got {tuple(mu.shape)}")
    g = geometry
    lead = mu.shape[:-3]
    vol = mu.reshape(-1, *mu.shape[-3:]).float()  # (B, X, Y, Z)
    nx, ny, nz = vol.shape[1:]
    dx, dy, dz = (float(s) for s in spacing)
    sod = g.sid_mm - 150.0 if g.sod_mm is None else g.sod_mm
    mag = g.sid_mm / sod if g.beam == "cone" else 1.0
    nu, nv = g.detector_shape or (nx, nz)
    du, dv = g.pixel_mm or (dx * mag, dz * mag)
    dev = vol.device
    # detector pixel centres, in mm from the central ray, at the detector (u to patient's left)
    xu = -(torch.arange(nu, device=dev, dtype=torch.float64) - (nu - 1) / 2) * du
    zv = -(torch.arange(nv, device=dev, dtype=torch.float64) - (nv - 1) / 2) * dv
    xd, zd = torch.meshgrid(xu, zv, indexing="ij")  # (U, V)
    yj = (torch.arange(ny, device=dev, dtype=torch.float64) - (ny - 1) / 2) * dy  # anterior +
    if g.beam == "parallel":
        scale = torch.ones(1, device=dev, dtype=torch.float64)
        step = torch.full_like(xd, dy)
    else:  # source on the central ray; y_s its (anterior) position relative to the centre
        ys = -sod if g.view == "PA" else sod
        yd = ys + (g.sid_mm if g.view == "PA" else -g.sid_mm)
        scale = (yj - ys) / (yd - ys)  # fraction of the way to the detector, per plane
        step = dy * torch.sqrt(xd**2 + zd**2 + (yd - ys) ** 2) / abs(yd - ys)
    # bilinear sampling in each plane: input (planes, B, Z, X), grid (planes, V, U, (x, z))
    planes = vol.permute(2, 0, 3, 1)  # (Y, B, Z, X)
    out = torch.zeros(vol.shape[0], nv, nu, device=dev, dtype=torch.float32)
    chunk = max(1, int(2**22 // max(nu * nv, 1)))  # ~100 MB of grid at most
    for j0 in range(0, ny, chunk):
        sl = slice(j0, min(j0 + chunk, ny))
        s = scale if scale.numel() == 1 else scale[sl]
        s = s.reshape(-1, 1, 1)
        gx = (xd * s / dx + (nx - 1) / 2) * (2 / max(nx - 1, 1)) - 1  # index -> [-1, 1]
        gz = (zd * s / dz + (nz - 1) / 2) * (2 / max(nz - 1, 1)) - 1
        gx, gz = torch.broadcast_tensors(gx, gz)
        grid = torch.stack([gx, gz], dim=-1).transpose(1, 2).float()  # (n, V, U, 2)
        grid = grid.expand(sl.stop - sl.start, *grid.shape[1:])
        samples = F.grid_sample(planes[sl], grid, mode="bilinear", padding_mode="zeros",
                                align_corners=True)  # fmt: skip
        out += samples.sum(dim=0)
    p = out.transpose(1, 2) * step.float()  # (B, U, V)
    return p.reshape(*lead, nu, nv)


def _blur_mm(image: torch.Tensor, sigma_mm: float, pixel_mm: Sequence[float]) -> torch.Tensor:
    """Gaussian blur of ``(..., U, V)``; wide kernels on a coarser copy (their output is smooth,
    so bilinear upsampling loses nothing)."""
    from medimg.physics.smoothing import gaussian_blur

    su, sv = sigma_mm / pixel_mm[0], sigma_mm / pixel_mm[1]
    if sigma_mm <= 0:
        return image
    lead, (nu, nv) = image.shape[:-2], image.shape[-2:]
    x = image.reshape(-1, nu, nv).float()
    f = max(1, int(min(su, sv) // 4))  # keep ~4 px per sigma after pooling
    if f > 1:
        small = F.avg_pool2d(x[:, None], f, ceil_mode=True)[:, 0]
        small = gaussian_blur(small, (0, su / f, sv / f))
        x = F.interpolate(small[:, None], size=(nu, nv), mode="bilinear", align_corners=False)[:, 0]
    else:
        x = gaussian_blur(x, (0, su, sv))
    return x.reshape(*lead, nu, nv)


def expose(
    p: torch.Tensor,
    pixel_mm: Sequence[float],
    *,
    i0: float = 1e4,
    scatter_fraction: float = 0.0,
    scatter_sigma_mm: float = 40.0,
    blur_sigma_mm: float = 0.0,
    noise: Literal["poisson", "gaussian", "none"] = "poisson",
    electronic_sigma: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Detected counts for line integrals ``p`` ``(..., U, V)``: ``i0`` counts per pixel in the
    open field, scatter ``k G(I0 e^-p)`` with ``k = f / (1 - f)`` (``f`` = ``scatter_fraction``
    of the total behind a uniform object), detector blur, then noise (module doc)."""
    if not 0 <= scatter_fraction < 1 or i0 <= 0:
        raise InputError(f"need 0 <= scatter_fraction < 1 and i0 > 0, got {scatter_fraction}, {i0}")
    primary = i0 * torch.exp(-p.float())
    signal = primary
    if scatter_fraction > 0:
        k = scatter_fraction / (1 - scatter_fraction)
        signal = primary + k * _blur_mm(primary, scatter_sigma_mm, pixel_mm)
    signal = _blur_mm(signal, blur_sigma_mm, pixel_mm)
    if noise == "poisson":
        signal = torch.poisson(signal.clamp_min(0), generator=generator)
    elif noise == "gaussian":
        z = torch.randn(signal.shape, generator=generator, device=signal.device)
        signal = signal + signal.clamp_min(0).sqrt() * z
    elif noise != "none":
        raise InputError(f"noise must be poisson, gaussian or none, got {noise!r}")
    if electronic_sigma > 0:
        z = torch.randn(signal.shape, generator=generator, device=signal.device)
        signal = signal + electronic_sigma * z
    return signal


def log_image(counts: torch.Tensor, i0: float = 1e4) -> torch.Tensor:
    """``-log(I / i0)``, counts below half a quantum clamped (no infinities at starved pixels)."""
    return -torch.log(counts.float().clamp_min(0.5) / i0)


def _window(image: torch.Tensor, window: tuple[float, float] | None) -> tuple[float, float]:
    if window is not None:
        c, w = float(window[0]), float(window[1])
        if w <= 0:
            raise InputError(f"window width must be positive, got {w}")
        return c - w / 2, c + w / 2
    q = torch.quantile(image.float().flatten()[:: max(1, image.numel() // 2**20)],
                       torch.tensor([0.005, 0.995], device=image.device))  # fmt: skip
    lo, hi = float(q[0]), float(q[1])
    return lo, max(hi, lo + 1e-6)


def to_stored(
    log_img: torch.Tensor,
    photometric: Literal["MONOCHROME1", "MONOCHROME2"] = "MONOCHROME2",
    window: tuple[float, float] | None = None,
    bits: int = 12,
) -> torch.Tensor:
    """Stored pixel values (integers in ``[0, 2**bits - 1]``, as float32) of a log image:
    ``window`` ``(center, width)`` in log units (default: the 0.5-99.5 percentiles) mapped
    linearly; MONOCHROME2 keeps dense = high, MONOCHROME1 inverts (module doc)."""
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InputError(f"photometric must be MONOCHROME1 or MONOCHROME2, got {photometric!r}")
    lo, hi = _window(log_img, window)
    top = float(2**bits - 1)
    v = torch.round(((log_img.float() - lo) / (hi - lo)).clamp(0, 1) * top)
    return top - v if photometric == "MONOCHROME1" else v


def from_stored(
    pixels: torch.Tensor,
    photometric: str,
    bits: int | None = None,
) -> torch.Tensor:
    """Stored values as MONOCHROME2 grey (dense = high): MONOCHROME1 is inverted against its
    full range ``2**bits - 1`` (default: the image's own maximum)."""
    x = pixels.float()
    if photometric == "MONOCHROME2":
        return x
    if photometric == "MONOCHROME1":
        top = float(2**bits - 1) if bits is not None else float(x.max())
        return top - x
    raise InputError(f"not a grey radiograph (PhotometricInterpretation {photometric!r})")


def _chord(
    shape: Sequence[int], pixel_mm: Sequence[float], center: Sequence[float],
    semi_axes_mm: Sequence[float], device: torch.device,
) -> torch.Tensor:  # fmt: skip
    """Path length (mm) through an ellipsoid, semi-axes ``(a_u, a_v, a_depth)``, along the
    beam at each pixel centre ``(U, V)``; ``center`` in pixels ``(u, v)``."""
    u = (torch.arange(shape[0], device=device, dtype=torch.float64) - center[0]) * pixel_mm[0]
    v = (torch.arange(shape[1], device=device, dtype=torch.float64) - center[1]) * pixel_mm[1]
    q = 1 - (u[:, None] / semi_axes_mm[0]) ** 2 - (v[None, :] / semi_axes_mm[1]) ** 2
    return 2 * semi_axes_mm[2] * q.clamp_min(0).sqrt()


def nodule_line_integral(
    shape: Sequence[int],
    pixel_mm: Sequence[float],
    center: Sequence[float],
    diameter_mm: float,
    kind: str = "solid",
    *,
    axes_ratio: Sequence[float] = (1.0, 1.0, 1.0),
    core_fraction: float = 0.5,
    displaced_hu: float = LUNG_HU,
    hu: float | None = None,
    mu_water: float = MU_WATER_PER_MM,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The change a nodule makes to a log image ``(U, V)``: ``(mu_nodule - mu_displaced) *
    chord`` for an ellipsoid of ``diameter_mm`` (times ``axes_ratio`` per axis ``(u, v,
    depth)``) centred at pixel ``center``. ``kind``: ``solid``, ``part_solid`` (a ground-glass
    ellipsoid holding a solid core ``core_fraction`` of its size) or ``calcified``
    (:data:`NODULE_KINDS`; ``hu`` overrides the outer density)."""
    if kind not in NODULE_KINDS:
        raise InputError(f"kind must be one of {', '.join(NODULE_KINDS)}, got {kind!r}")
    if diameter_mm <= 0 or not 0 < core_fraction < 1:
        raise InputError(f"need diameter_mm > 0 and 0 < core_fraction < 1, got {diameter_mm}, "
                         f"{core_fraction}")  # fmt: skip
    dev = torch.device(device)
    levels = list(NODULE_KINDS[kind]) if hu is None else [float(hu), *NODULE_KINDS[kind][1:]]
    mu = [float(hu_to_mu(torch.tensor(h), mu_water)) for h in (displaced_hu, *levels)]
    semi = [diameter_mm / 2 * r for r in axes_ratio]
    out = (mu[1] - mu[0]) * _chord(shape, pixel_mm, center, semi, dev)
    if kind == "part_solid":  # the core replaces ground glass, not lung
        core = [s * core_fraction for s in semi]
        out = out + (mu[2] - mu[1]) * _chord(shape, pixel_mm, center, core, dev)
    return out.float()


def insert_nodule(
    log_img: torch.Tensor,
    pixel_mm: Sequence[float],
    center: Sequence[float],
    diameter_mm: float,
    kind: str = "solid",
    *,
    blur_sigma_mm: float = 0.0,
    gain: float = 1.0,
    **params: object,
) -> torch.Tensor:
    """``log_img`` ``(..., U, V)`` with a nodule added (:func:`nodule_line_integral`; ``params``
    go to it), blurred like the detector (``blur_sigma_mm``) and scaled by ``gain`` (stored
    grey levels per unit of line integral, for a real image stored in other units)."""
    shape = log_img.shape[-2:]
    dp = nodule_line_integral(shape, pixel_mm, center, diameter_mm, kind,
                              device=log_img.device, **params)  # type: ignore[arg-type]  # fmt: skip
    dp = _blur_mm(dp, blur_sigma_mm, pixel_mm)
    return log_img + gain * dp.to(log_img.dtype)
