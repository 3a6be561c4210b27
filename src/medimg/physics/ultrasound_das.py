"""Delay-and-sum beamforming of linear-array channel data, envelope and log compression.

Channel data are turned into baseband IQ once (analytic signal by scipy's Hilbert transform,
times ``exp(-2 pi j fc t)``); each pixel then sums, over the active receive elements, the IQ
sample at its round-trip delay (linear interpolation, accurate on the slowly varying baseband),
rotated back by ``exp(2 pi j fc tau)``, so the result is the pixel's analytic signal: its modulus
is the envelope. Plane-wave transmits are coherently compounded (complex sum over angles);
focused transmits are beamformed line by line (each transmit fills the image column at its
focus' lateral position). Receive apodisation: a Hann (or flat) window over the aperture
``depth / f-number`` centred on the pixel (PICMUS uses F# 1.75).

Written here rather than taken from a package: no maintained pip package beamforms arbitrary
plane-wave/focused channel data on a user grid (``pymust``'s ``dasmtx`` builds a dense-ish
sparse matrix per transmit and is several times slower); delays come from
:func:`medimg.physics.ultrasound.transmit_delays` / :func:`receive_delays`, the same functions
the simulator uses, so the two cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import hilbert

from medimg.errors import InputError
from medimg.physics.ultrasound import (
    ChannelData,
    attenuation_np,
    receive_delays,
    transmit_delays,
)

__all__ = [
    "Grid",
    "beamform",
    "das_delay",
    "log_compress",
    "to_baseband",
]


@dataclass(frozen=True)
class Grid:
    """A pixel grid: lateral positions ``x`` and depths ``z`` (m), both increasing."""

    x: np.ndarray
    z: np.ndarray

    @classmethod
    def from_extent(
        cls, x_range: tuple[float, float], z_range: tuple[float, float], dx: float, dz: float
    ) -> Grid:
        """Pixels every ``dx`` / ``dz`` (m) from the ranges' starts up to their ends."""
        if dx <= 0 or dz <= 0 or x_range[1] < x_range[0] or z_range[1] < z_range[0]:
            raise InputError("grid: spacings must be > 0 and ranges increasing")
        if z_range[0] <= 0:
            raise InputError(f"grid: depths must be > 0 m, got {z_range[0]}")
        nx = math.floor((x_range[1] - x_range[0]) / dx + 1e-9) + 1
        nz = math.floor((z_range[1] - z_range[0]) / dz + 1e-9) + 1
        return cls(x_range[0] + dx * np.arange(nx), z_range[0] + dz * np.arange(nz))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.x.size, self.z.size)

    @property
    def spacing(self) -> tuple[float, float]:
        dx = float(self.x[1] - self.x[0]) if self.x.size > 1 else 1e-4
        dz = float(self.z[1] - self.z[0]) if self.z.size > 1 else 1e-4
        return dx, dz


def to_baseband(data: ChannelData) -> np.ndarray:
    """Baseband IQ ``(n_tx, n_el, n_t)`` complex64 of the RF channel data."""
    t = data.t0 + np.arange(data.rf.shape[-1]) / data.probe.fs
    analytic = hilbert(data.rf, axis=-1)
    return (analytic * np.exp(-2j * math.pi * data.probe.fc * t)).astype(np.complex64)


def das_delay(data: ChannelData, i_tx: int, element: int, x: float, z: float) -> float:
    """Round-trip delay (s) DAS uses for one pixel, element and transmit."""
    px, pz = np.array([x]), np.array([z])
    t_tx = transmit_delays(data.transmits, i_tx, px, pz, data.probe.c)[0]
    t_rx = receive_delays(data.probe.element_x[[element]], px, pz, data.probe.c)[0, 0]
    return float(t_tx + t_rx)


def _apertures(ex: np.ndarray, px: np.ndarray, pz: np.ndarray, fnumber: float, apod: str):
    """Each pixel's active receive elements ``(P, A)`` (padded: weight 0 where unused) and
    their apodisation weights; the aperture is ``depth / fnumber`` wide, at least +-1 pitch."""
    pitch = float(ex[1] - ex[0]) if ex.size > 1 else 1.0
    half = np.maximum(pz / (2 * fnumber), pitch)
    lo = np.clip(np.ceil((px - half - ex[0]) / pitch - 1e-9), 0, ex.size - 1).astype(np.int64)
    hi = np.clip(np.floor((px + half - ex[0]) / pitch + 1e-9), -1, ex.size - 1).astype(np.int64)
    width = int(max(1, (hi - lo + 1).max()))
    idx = lo[:, None] + np.arange(width)[None, :]
    valid = idx <= hi[:, None]
    idx = np.minimum(idx, ex.size - 1)
    # float32 from here: the per-pair arrays dominate the set-up's cost (mm precision is ample)
    dx = px.astype(np.float32)[:, None] - ex.astype(np.float32)[idx]
    if apod == "hann":
        ratio = np.abs(dx) / (2 * half.astype(np.float32))[:, None]
        w = np.cos(np.float32(np.pi) * np.minimum(ratio, np.float32(0.5))) ** 2
    else:
        w = np.ones(dx.shape, np.float32)
    w *= valid
    return idx, w, dx


def beamform(
    data: ChannelData,
    x: np.ndarray,
    z: np.ndarray,
    *,
    transmits: list[int] | np.ndarray | None = None,
    fnumber: float = 1.75,
    apod: str = "hann",
    tgc: bool = True,
    iq: np.ndarray | None = None,
    compound: bool = True,
    block_pairs: int = 1_000_000,
) -> np.ndarray:
    """Delay-and-sum image ``(len(x), len(z))`` complex64 (the pixels' analytic signal).

    Plane waves: every pixel of the ``x`` x ``z`` grid, coherently compounded over
    ``transmits`` (default all). Focused: transmit ``i`` fills the column nearest its focus'
    ``x`` (give ``x`` = the focus positions for a conventional line-by-line image). ``tgc``
    undoes the data's attenuation at the centre frequency (``exp(a fc 2z)``). ``iq`` may pass
    :func:`to_baseband`'s result to beamform several subsets without recomputing it.
    ``compound=False`` (plane waves): one image per transmit ``(n, len(x), len(z))``, sharing
    the per-pixel set-up (cheaper than separate calls).
    """
    if fnumber <= 0 or apod not in ("hann", "rect"):
        raise InputError("beamform: fnumber must be > 0 and apod 'hann' or 'rect'")
    x, z = np.asarray(x, np.float64).ravel(), np.asarray(z, np.float64).ravel()
    if x.size == 0 or z.size == 0 or np.any(z <= 0):
        raise InputError("beamform: the grid needs pixels, all at depth > 0")
    probe, tx = data.probe, data.transmits
    chosen = np.arange(len(tx)) if transmits is None else np.asarray(transmits, dtype=int)
    if chosen.size == 0 or chosen.min() < 0 or chosen.max() >= len(tx):
        raise InputError(f"beamform: transmit indices must lie in 0..{len(tx) - 1}")
    iq = to_baseband(data) if iq is None else iq
    n_t = iq.shape[2] + 2  # one zero sample each side: out-of-record delays read zeros
    padded = np.zeros((iq.shape[0], iq.shape[1], n_t), np.complex64)
    padded[:, :, 1:-1] = iq
    separate = not compound and tx.kind == "plane"
    out = np.zeros((len(chosen), x.size, z.size) if separate else (x.size, z.size), np.complex128)
    ex = probe.element_x
    per_row = max(1, x.size * int(min(ex.size, z.max() / fnumber / probe.pitch + 3)))
    rows = max(1, block_pairs // per_row)
    if tx.kind == "focused":  # each transmit owns the image column nearest its focus
        owner = chosen[np.argmin(np.abs(x[:, None] - tx.focus[chosen, 0][None, :]), axis=1)]
        for r in range(0, z.size, rows):
            gx, gz = np.meshgrid(x, z[r : r + rows], indexing="ij")
            own = np.repeat(owner, gz.shape[1])
            vals = _sum_pixels(padded, data, chosen, gx.ravel(), gz.ravel(), fnumber, apod, own)
            out[:, r : r + rows] = vals.reshape(gx.shape)
    else:
        for r in range(0, z.size, rows):  # blocks of depth rows: similar aperture widths
            gx, gz = np.meshgrid(x, z[r : r + rows], indexing="ij")
            vals = _sum_pixels(padded, data, chosen, gx.ravel(), gz.ravel(), fnumber, apod,
                               separate=separate)  # fmt: skip
            out[..., r : r + rows] = vals.reshape((*out.shape[:-1], gx.shape[1]))
    if tgc and data.attenuation > 0:
        out *= np.exp(attenuation_np(data.attenuation) * probe.fc * 2 * z)
    return out.astype(np.complex64)


def _sum_pixels(
    padded: np.ndarray,
    data: ChannelData,
    chosen: np.ndarray | list[int],
    px: np.ndarray,
    pz: np.ndarray,
    fnumber: float,
    apod: str,
    owner: np.ndarray | None = None,
    separate: bool = False,
) -> np.ndarray:
    """Sum over ``chosen`` transmits and active elements for pixels ``(px, pz)``; with ``owner``
    (focused imaging) each pixel takes only its own transmit ``owner[p]``; ``separate``: one
    row per transmit instead of their sum."""
    probe = data.probe
    n_t = padded.shape[2]
    ex = probe.element_x
    idx, w, dx = _apertures(ex, px, pz, fnumber, apod)
    r_rx = np.hypot(dx, pz.astype(np.float32)[:, None])  # m, float32: ~1e-9 m error
    w_fc = 2 * math.pi * probe.fc
    # the carrier rotation exp(j w tau) splits into a receive part (per pair, here) and a
    # transmit part (per pixel, after the sum); float32 phases of <= 1e4 rad err by < 1e-3 rad
    phase = r_rx * np.float32(w_fc / probe.c)
    rot = np.empty(phase.shape, np.complex64)
    rot.real, rot.imag = np.cos(phase), np.sin(phase)
    rot *= w
    s_rx = r_rx * np.float32(probe.fs / probe.c)
    s_rx += np.float32(1 - data.t0 * probe.fs)  # +1: the leading zero
    base = idx * n_t
    acc = np.zeros((len(chosen), px.size) if separate else px.size, np.complex128)
    if owner is not None:  # one pass: gather from each pixel's own transmit
        base = base + (owner.astype(np.int64) * padded.shape[1] * n_t)[:, None]
        passes = [(owner, padded.reshape(-1))]
    else:
        passes = [(int(i), padded[i].reshape(-1)) for i in chosen]
    for n, (i, flat) in enumerate(passes):
        t_tx = transmit_delays(data.transmits, i, px, pz, probe.c)
        s = s_rx + (t_tx * probe.fs).astype(np.float32)[:, None]
        np.clip(s, 0, n_t - 1.001, out=s)
        k = s.astype(np.int64)
        frac = s - k
        k += base
        a = flat[k]
        val = a + frac * (flat[k + 1] - a)
        pixel = (val * rot).sum(1) * np.exp(1j * w_fc * t_tx)
        if separate:
            acc[n] = pixel
        else:
            acc += pixel
    return acc


def log_compress(envelope: np.ndarray, dynamic_range: float = 60.0) -> np.ndarray:
    """B-mode in dB: ``20 log10(env / max)`` clipped to ``[-dynamic_range, 0]``, float32."""
    if dynamic_range <= 0:
        raise InputError(f"dynamic range must be > 0 dB, got {dynamic_range}")
    env = np.abs(np.asarray(envelope))
    peak = float(env.max())
    if peak <= 0:
        return np.full(env.shape, -dynamic_range, np.float32)
    db = 20 * np.log10(np.maximum(env / peak, 10 ** (-dynamic_range / 20)))
    return db.astype(np.float32)
