"""Filtered back-projection (FBP) for parallel and equiangular fan-beam sinograms, in torch.

Parallel (Kak & Slaney eq. 3.45): ``f(x) = (pi / N) sum_i q_i(x . theta_i)`` with
``q = p * h / tau``, ``h`` the band-limited ramp kernel in samples (``h(0) = 1/4``,
``h(n odd) = -1/(pi n)^2``; built in space and then Fourier-transformed, so the DC term is
right), windowed by the chosen filter and ``tau`` the detector pitch (mm). Equiangular fan
(K&S eq. 3.117-3.119): pre-weight ``D cos(gamma)``, convolve with ``g(n) = (n a / sin(n a))^2
h(n) / (2 a)`` (``a`` the angular pitch), back-project with ``1/L^2`` (``L`` source-pixel
distance) times the view step; short scans get Parker weights. Line integrals of an image in
1/mm give the image back in 1/mm: the absolute scale is kept.

Filters (frequency ``nu`` in units of Nyquist, ``c`` = ``frequency_scaling``; zero above ``c``):
``ram-lak`` 1, ``shepp-logan`` ``sinc(nu / 2c)``, ``cosine`` ``cos(pi nu / 2c)``, ``hann``
``(1 + cos(pi nu / c)) / 2``. Projections are zero-padded to ``max(64, 2^ceil(log2 2 (n_det + 2)))``.

Back-projection, parallel beam (default, ``upsample=None``): each filtered projection is
interpolated exactly as a band-limited (sinc) signal and back-projected through the Fourier
slice theorem with the non-uniform FFT of :mod:`medimg.physics.ct`: ``O(N^2 log N + V N)`` work,
``O(V N)`` memory, no matrix; the limit of sinc upsampling by an infinite factor. Filtered
projections are kept 16 samples past each detector edge and are zero further out (pixels the
detector does not see get nothing from that view). This back-projection is the adjoint of the
``"fourier"`` projector's image-to-spectra step only: FBP is not the transpose of
:class:`~medimg.physics.ct.CTProjector` (different period, no band limit on the pixels, and a
filter), so use ``CTProjector.A_adjoint`` where an exact adjoint is needed.

Sinc interpolation keeps the ramp filter's response up to the detector's Nyquist frequency;
linear interpolation (``iradon``) damps it (to 0.4 at Nyquist) and so smooths. On projections
that a detector integrates over its element width, the sinc path has the lower error; on
point-sampled projections of sharp edges (aliased) linear interpolation does better with the
ram-lak filter; apodised filters (Shepp-Logan, Hann) remove the difference (bench/RESULTS.md).

Given an ``upsample`` factor (and always for fan beams) back-projection is pixel-driven instead:
the filtered projections are upsampled ``upsample`` times by sinc interpolation (zero-padding
their spectrum) and read with linear interpolation, view-chunk by view-chunk (``grid_sample``,
no stored matrix); ``upsample=1`` is plain linear interpolation as ``iradon`` (zero past the end
elements unless ``circle``), whose images it reproduces to float precision. That path costs
``O(V N^2)``: about iradon's time, ~10x the Fourier path at 512^2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from medimg.errors import InputError
from medimg.physics.ct import (
    CTGeometry,
    FanBeamGeometry,
    ParallelBeamGeometry,
    _fft_len,
    _FourierSlice,
)

__all__ = ["FBP", "FILTERS", "fbp", "filter_window"]

FILTERS = ("ram-lak", "shepp-logan", "cosine", "hann")
_ALIASES = {"ramp": "ram-lak", "ramlak": "ram-lak", "hanning": "hann", "shepp_logan": "shepp-logan"}
_MARGIN = 2  # pixel-driven path: filtered projections kept 2 samples past each detector edge
_KEEP = 16  # Fourier path: samples kept past each detector edge


def filter_window(name: str, nu: torch.Tensor, frequency_scaling: float = 1.0) -> torch.Tensor:
    """Apodisation window at ``nu = |f| / f_Nyquist`` (0..1); the filter is ``|f| * window``."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in FILTERS:
        raise InputError(f"filter_name must be one of {FILTERS}, got {name!r}")
    if not 0 < frequency_scaling <= 1:
        raise InputError(f"frequency_scaling must be in (0, 1], got {frequency_scaling}")
    v = nu / frequency_scaling
    win = {
        "ram-lak": torch.ones_like(v),
        "shepp-logan": torch.sinc(v / 2),
        "cosine": torch.cos(math.pi * v / 2),
        "hann": 0.5 * (1 + torch.cos(math.pi * v)),
    }[key]
    return torch.where(v <= 1, win, torch.zeros_like(v))


def _signed_index(n: int) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)
    return torch.where(k < n / 2, k, k - n)


def _kernel_spectrum(g: CTGeometry, name: str, scaling: float, n_pad: int) -> torch.Tensor:
    """rfft of the (windowed, geometry-scaled) convolution kernel, float64 ``(n_pad//2+1,)``."""
    big = 8 * n_pad  # window the ramp on a fine grid: the kernel then does not depend on n_pad
    n = _signed_index(big)
    h = torch.where(n.remainder(2) == 1, -1.0 / (math.pi * n) ** 2, torch.zeros_like(n))
    h[0] = 0.25
    win = filter_window(name, torch.linspace(0, 1, big // 2 + 1, dtype=torch.float64), scaling)
    h = torch.fft.irfft(torch.fft.rfft(h) * win, n=big)  # windowed ramp kernel, in samples
    h = torch.cat([h[: n_pad // 2], h[big - n_pad // 2 :]])  # all lags a projection needs
    if isinstance(g, ParallelBeamGeometry):
        return torch.fft.rfft(h / g.det_unit).real
    a, n = g.det_unit, _signed_index(n_pad)
    ratio = torch.where(n == 0, torch.ones_like(n), n * a / torch.sin(n * a)) ** 2
    ratio = torch.where((n * a).abs() < 0.95 * math.pi, ratio, torch.zeros_like(n))
    return torch.fft.rfft(h * ratio / (2 * a)).real


def _parker(g: FanBeamGeometry) -> torch.Tensor:
    """Parker short-scan weights ``(n_views, n_det)`` (sum to 1 over conjugate rays)."""
    gm = (g.angle_range - math.pi) / 2
    gam = g.det_coords()[None, :]
    if gm <= 0 or gam.abs().max() > gm:
        need = math.pi + 2 * float(gam.abs().max())
        raise InputError(
            f"fan-beam FBP needs a full scan (2 pi) or angle_range >= pi + fan angle "
            f"= {need:.4f} rad, got {g.angle_range:.4f}; widen angle_range or narrow the detector"
        )
    b = (g.angles() - g.start_angle)[:, None]
    rise = torch.sin(math.pi / 4 * b / (gm - gam)) ** 2
    fall = torch.sin(math.pi / 4 * (math.pi + 2 * gm - b) / (gm + gam)) ** 2
    w = torch.where(b < 2 * (gm - gam), rise, torch.ones_like(b * gam))
    return torch.where(b > math.pi - 2 * gam, fall, w).clamp(0, 1)


class FBP(nn.Module):
    """Filtered back-projection ``(..., n_views, n_det) -> (..., H, W)`` for a geometry.

    Parameters
    ----------
    geometry
        :class:`~medimg.physics.ct.ParallelBeamGeometry` (views covering pi or 2 pi) or
        :class:`~medimg.physics.ct.FanBeamGeometry` (2 pi, or a Parker short scan).
    filter_name
        One of :data:`FILTERS` (``ramp`` is an alias of ``ram-lak``).
    frequency_scaling
        Cut-off as a fraction of Nyquist, in (0, 1]; the window is stretched to it.
    circle
        Reconstruct only inside the circle inscribed in the image (zero outside), as
        ``skimage.transform.iradon(circle=True)``; it also saves time.
    upsample
        ``None`` (default): exact band-limited interpolation, Fourier back-projection (parallel
        beams; fan beams use 2). An integer: sinc upsampling by that factor, then linear
        interpolation, pixel-driven (``1`` = ``iradon``'s linear interpolation).
    max_matrix_mb
        Unused; kept so that older calls still work (no back-projection matrix is stored).

    >>> from medimg.physics.ct import CTProjector
    >>> g = ParallelBeamGeometry(image_shape=(64, 64), n_views=96, pixel_size=0.5)
    >>> disk = (torch.cartesian_prod(*[torch.arange(64.0) - 31.5] * 2).norm(dim=1) < 20)
    >>> x = 0.02 * disk.reshape(1, 1, 64, 64).float()  # water-like disk, mu in 1/mm
    >>> rec = FBP(g)(CTProjector(g).A(x))
    >>> round(rec[0, 0, 28:36, 28:36].mean().item(), 4)
    0.02
    """

    def __init__(
        self,
        geometry: CTGeometry,
        filter_name: str = "ram-lak",
        frequency_scaling: float = 1.0,
        *,
        circle: bool = False,
        upsample: int | None = None,
        max_matrix_mb: float = 512.0,
    ) -> None:
        super().__init__()
        if not isinstance(geometry, (ParallelBeamGeometry, FanBeamGeometry)):
            raise InputError(f"geometry must be a Parallel/FanBeamGeometry, got {type(geometry)}")
        if upsample is not None and int(upsample) < 1:
            raise InputError(f"upsample must be None or an integer >= 1, got {upsample}")
        g = self.geometry = geometry
        self.fourier = upsample is None and isinstance(g, ParallelBeamGeometry)
        self.up = 1 if self.fourier else int(upsample or 2)
        self.max_matrix_mb = float(max_matrix_mb)
        n_det = int(g.n_det)  # type: ignore[arg-type]
        self.n_pad = max(64, 2 ** math.ceil(math.log2(2 * (n_det + _MARGIN))))  # no wrap-around
        self.n_up = self.n_pad * self.up  # filtered samples per view, circular
        if isinstance(g, FanBeamGeometry):
            pre = g.source_iso * g.det_coords().cos()[None, :].expand(g.sinogram_shape)
            full = abs(g.angle_range - 2 * math.pi) < 1e-9
            pre = pre if full else 2 * pre * _parker(g)  # a short scan covers each line once
            self.register_buffer("pre_weight", pre.contiguous())
            view_weight = g.angle_range / g.n_views
        else:
            self.pre_weight = None
            view_weight = math.pi / g.n_views
        spec = _kernel_spectrum(g, filter_name, frequency_scaling, self.n_pad)
        # scalars folded into the spectrum (float64; cast on use): fewer passes over the data
        self.register_buffer("spectrum", spec * (view_weight * self.up))
        h, w = g.image_shape
        rr, cc = torch.meshgrid(
            torch.arange(h, dtype=torch.float64),
            torch.arange(w, dtype=torch.float64),
            indexing="ij",
        )
        inside = torch.ones(h * w, dtype=torch.bool)
        if circle:  # scikit-image's reconstruction circle about the rotation axis
            r0, c0 = g.iso_center  # type: ignore[misc]
            inside = ((rr - r0) ** 2 + (cc - c0) ** 2 <= (min(h, w) // 2) ** 2).reshape(-1)
        self.register_buffer("pixels", inside.nonzero()[:, 0])
        self.register_buffer("mask", inside.reshape(h, w) if circle else None)
        self._rc = torch.stack([rr.reshape(-1)[inside], cc.reshape(-1)[inside]], 1)
        self._slice: _FourierSlice | None = None
        if self.fourier:
            # one period of the interpolated projections: the detector, _KEEP samples either
            # side, and a zero gap that every pixel the detector misses falls into
            reach, dc = g.fov_radius / g.det_unit, float(g.det_center)  # type: ignore[arg-type]
            span = max(dc + reach, n_det + _KEEP) - min(dc - reach, -_KEEP)
            self._slice = _FourierSlice(g, _fft_len(math.ceil(span) + 2 * _KEEP + 2))  # type: ignore[arg-type]

    def _filtered(self, p: torch.Tensor) -> torch.Tensor:
        """Weighted, filtered projections ``(C, V, n_up)``, ``up`` samples per detector pitch;
        circular: the last samples are the signal left of element 0, where it spills over."""
        if self.pre_weight is not None:
            p = p * self.pre_weight.to(p.dtype)
        spec = torch.fft.rfft(p, n=self.n_pad) * self.spectrum.to(p.dtype)
        return torch.fft.irfft(spec, n=self.n_up)  # zero-padded spectrum: sinc interpolation

    def _fourier_backproject(self, q: torch.Tensor) -> torch.Tensor:
        """Back-project ``(C, V, n_pad)`` filtered projections as band-limited signals."""
        f, n_det = self._slice, int(self.geometry.n_det)  # type: ignore[arg-type]
        period, keep = f.period, _KEEP  # type: ignore[union-attr]
        gap = q.new_zeros(*q.shape[:-1], period - n_det - 2 * keep)
        q = torch.cat([q[..., : n_det + keep], gap, q[..., self.n_pad - keep :]], -1)
        spec = torch.fft.rfft(q)[..., : f.n_freq]  # type: ignore[union-attr]
        weight = torch.full((f.n_freq,), 2.0 / period, dtype=q.dtype, device=q.device)  # type: ignore[union-attr]
        weight[0] = 1.0 / period  # the real part of sum_k counts k and -k
        return f.image(spec * weight).reshape(q.shape[0], -1)  # type: ignore[union-attr]

    def _footprint(self, views: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Upsampled detector position (may be < 0) and weight per view and pixel, ``(v, P)``."""
        g = self.geometry
        (r0, c0), d = g.iso_center, g.pixel_size  # type: ignore[misc]
        x = (self._rc[:, 1] - c0) * d
        y = (r0 - self._rc[:, 0]) * d
        ang = g.angles()[views, None]
        if isinstance(g, ParallelBeamGeometry):
            u = (x * ang.cos() + y * ang.sin()) / g.det_unit
            weight = torch.ones_like(u)
        else:
            vx, vy = x + g.source_iso * ang.sin(), y - g.source_iso * ang.cos()  # source->pixel
            cross, dot = ang.sin() * vy + ang.cos() * vx, ang.sin() * vx - ang.cos() * vy
            u = torch.atan2(cross, dot) / g.det_unit
            weight = 1.0 / (vx**2 + vy**2)
        return (u + g.det_center) * self.up, weight  # type: ignore[operator]

    def _backproject(self, q: torch.Tensor) -> torch.Tensor:
        """Pixel-driven back-projection of ``_filtered`` output ``(C, V, n_up)`` -> ``(C, H W)``,
        view-chunk by view-chunk: linear interpolation, no stored matrix."""
        c, n_v, n = q.shape
        n_det = int(self.geometry.n_det)  # type: ignore[arg-type]
        # iradon: nothing past the end elements, except with circle=True (it zero-pads the
        # sinogram to the image diagonal first, so the filtered tails are read there)
        clip = self.up == 1 and self.mask is None
        m = 0 if clip else _MARGIN * self.up
        ext = torch.cat([q[..., n - m :], q[..., : n_det * self.up + m]], -1)
        vals = q.new_zeros(c, self._rc.shape[0])
        step = max(1, 2**22 // max(self._rc.shape[0] * c, 1))
        for a in range(0, n_v, step):
            sl = slice(a, min(a + step, n_v))
            u, wt = self._footprint(sl)
            if clip:
                wt = wt * ((u >= 0) & (u <= n_det - 1))
            gx = (2 * (u + m) + 1) / ext.shape[-1] - 1
            grid = torch.stack([gx, torch.zeros_like(gx)], -1)[:, None].to(q.device, q.dtype)
            rows = ext[:, sl].permute(1, 0, 2)[:, :, None, :]  # [v,C,1,n_ext]
            s = F.grid_sample(rows, grid, mode="bilinear", align_corners=False)  # [v,C,1,P]
            vals = vals + (s[:, :, 0] * wt.to(q.device, q.dtype)[:, None]).sum(0)
        out = q.new_zeros(c, self.geometry.image_shape[0] * self.geometry.image_shape[1])
        out[:, self.pixels.to(q.device)] = vals
        return out

    def forward(self, sinogram: torch.Tensor) -> torch.Tensor:
        g = self.geometry
        if not torch.is_tensor(sinogram) or tuple(sinogram.shape[-2:]) != g.sinogram_shape:
            got = tuple(sinogram.shape) if torch.is_tensor(sinogram) else type(sinogram).__name__
            raise InputError(
                f"sinogram must end in (n_views, n_det) = {g.sinogram_shape} to match the "
                f"geometry, got {got}; rebuild the geometry for this data"
            )
        if not sinogram.is_floating_point():
            sinogram = sinogram.float()
        if not bool(torch.isfinite(sinogram.sum())):  # NaN and Inf reach the sum: one pass
            raise InputError("sinogram holds NaN or Inf; fix or mask those samples before FBP")
        lead, (h, w) = sinogram.shape[:-2], g.image_shape
        q = self._filtered(sinogram.reshape(-1, *g.sinogram_shape))
        if self.fourier:
            out = self._fourier_backproject(q)
            if self.mask is not None:
                out = out * self.mask.reshape(-1).to(out.dtype)
        else:
            out = self._backproject(q)
        return out.reshape(*lead, h, w)


_CACHE: dict[tuple[object, ...], FBP] = {}


def fbp(
    sinogram: torch.Tensor,
    geometry: CTGeometry,
    filter_name: str = "ram-lak",
    frequency_scaling: float = 1.0,
    *,
    circle: bool = False,
    upsample: int | None = None,
) -> torch.Tensor:
    """Functional :class:`FBP`; the operator for the last few settings is kept for reuse."""
    key = (geometry, filter_name, float(frequency_scaling), bool(circle), upsample)
    if key not in _CACHE:
        if len(_CACHE) >= 4:  # each holds its interpolation taps (O(views x detectors))
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = FBP(
            geometry, filter_name, frequency_scaling, circle=circle, upsample=upsample
        )
    return _CACHE[key].to(sinogram.device)(sinogram)
