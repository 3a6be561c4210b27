"""Ultrasound phantoms (scatterer maps with ground truth) and the channel-data file format.

A phantom is a set of point scatterers in the imaging plane (x lateral, z depth, metres):
random speckle scatterers with Gaussian amplitudes (fully developed speckle at ~30 per mm^2),
circular anechoic cysts (no scatterers) and hyperechoic inclusions (amplitudes scaled), and
bright point targets. Its ground truth (point positions, cyst centres/radii/kinds) travels in
the channel-data file so ``evaluate`` can score any reconstruction of it.

Channel-data files (``.npz``, read with ``allow_pickle=False``): ``rf`` as int16 with a float
``rf_scale`` (as scanners' ADCs store it; 96 dB of range), ``t0``, the probe (``fs``, ``fc``,
``c``, ``bandwidth``, ``pitch``, ``element_width``), the transmits (``tx_kind``, ``angles`` in
radians or ``focus`` (n, 2) in m, ``tx_fnumber``), ``attenuation`` (dB/cm/MHz) and ``meta``
(JSON: the phantom's ground truth and how it was simulated).
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medimg.errors import InputError
from medimg.io.output import atomic_path
from medimg.physics.ultrasound import (
    ChannelData,
    LinearArray,
    Transmits,
    plane_wave_angles,
    simulate_channel_data,
)
from medimg.typing import PathType

__all__ = [
    "PHANTOMS",
    "Phantom",
    "load_channel_data",
    "make_phantom",
    "save_channel_data",
    "simulate",
    "speckle_phantom",
]

FORMAT_VERSION = 1


@dataclass
class Phantom:
    """Scatterers (m) and ground truth: ``points`` [(x, z)], ``cysts`` [(x, z, r, db)] with
    ``db = -inf`` for anechoic, > 0 for hyperechoic."""

    x: np.ndarray
    z: np.ndarray
    amplitude: np.ndarray
    points: list[tuple[float, float]] = field(default_factory=list)
    cysts: list[tuple[float, float, float, float]] = field(default_factory=list)
    extent: tuple[float, float, float, float] = (-0.015, 0.015, 0.005, 0.045)

    def truth(self) -> dict:
        """JSON-able ground truth (infinite dB written as null)."""
        cysts = [[cx, cz, r, None if math.isinf(db) else db] for cx, cz, r, db in self.cysts]
        return {"points": [list(p) for p in self.points], "cysts": cysts,
                "extent": list(self.extent)}  # fmt: skip


def speckle_phantom(
    extent: tuple[float, float, float, float] = (-0.015, 0.015, 0.005, 0.045),
    density: float = 30.0,
    cysts: list[tuple[float, float, float, float]] = (),
    points: list[tuple[float, float]] = (),
    point_amplitude: float = 30.0,
    seed: int = 0,
) -> Phantom:
    """Speckle of ``density`` scatterers per mm^2 over ``extent`` = (x0, x1, z0, z1) in m, with
    ``cysts`` (x, z, radius, dB: ``-inf`` anechoic) and bright ``points``; ``density=0`` gives
    the points alone."""
    x0, x1, z0, z1 = extent
    if x1 <= x0 or z1 <= z0 or z0 <= 0 or density < 0:
        raise InputError(f"phantom extent {extent} must be increasing, at depth > 0")
    rng = np.random.default_rng(seed)
    n = round(density * (x1 - x0) * (z1 - z0) * 1e6)
    x = rng.uniform(x0, x1, n)
    z = rng.uniform(z0, z1, n)
    amp = rng.standard_normal(n)
    keep = np.ones(n, bool)
    for cx, cz, r, db in cysts:
        inside = np.hypot(x - cx, z - cz) <= r
        if math.isinf(db) and db < 0:
            keep &= ~inside
        else:
            amp[inside] *= 10 ** (db / 20)
    x, z, amp = x[keep], z[keep], amp[keep]
    if points:
        px, pz = np.array(points, dtype=np.float64).T
        x, z = np.concatenate([x, px]), np.concatenate([z, pz])
        amp = np.concatenate([amp, np.full(px.size, point_amplitude)])
    if x.size == 0:
        raise InputError("the phantom has no scatterers; give a density > 0 or points")
    return Phantom(x, z, amp, [tuple(p) for p in points], [tuple(c) for c in cysts], extent)


def _mixed(seed: int, density: float, scale: float = 1.0) -> Phantom:
    """Speckle with two anechoic cysts, one +6 dB inclusion and a column of points (PICMUS's
    contrast and resolution phantoms in one field); ``scale`` shrinks it about its centre."""
    s = scale
    cysts = [(-6e-3 * s, 15e-3 * s + 5e-3, 3e-3 * s, -math.inf),
             (-6e-3 * s, 33e-3 * s + 5e-3, 3e-3 * s, -math.inf),
             (6e-3 * s, 25e-3 * s + 5e-3, 3e-3 * s, 6.0)]  # fmt: skip
    points = [(6e-3 * s, (z * s) + 5e-3) for z in (6e-3, 14e-3, 36e-3)]
    extent = (-0.015 * s, 0.015 * s, 0.005, 0.005 + 0.04 * s)
    return speckle_phantom(extent, density, cysts, points, seed=seed)


def _points(seed: int, density: float, scale: float = 1.0) -> Phantom:
    del seed, density
    pts = [(xx * scale, 5e-3 + zz * scale) for zz in (5e-3, 15e-3, 25e-3, 35e-3)
           for xx in (-8e-3, 0.0, 8e-3)]  # fmt: skip
    return speckle_phantom((-0.015 * scale, 0.015 * scale, 0.005, 0.005 + 0.04 * scale), 0.0,
                           points=pts)  # fmt: skip


def _cysts(seed: int, density: float, scale: float = 1.0) -> Phantom:
    s = scale
    cysts = [(xx * s, 5e-3 + zz * s, 3e-3 * s, -math.inf)
             for zz in (10e-3, 30e-3) for xx in (-7e-3, 7e-3)]  # fmt: skip
    extent = (-0.015 * s, 0.015 * s, 0.005, 0.005 + 0.04 * s)
    return speckle_phantom(extent, density, cysts, seed=seed)


#: phantom name -> builder(seed, density, scale)
PHANTOMS = {"mixed": _mixed, "points": _points, "cysts": _cysts}


def make_phantom(name: str, seed: int = 0, density: float = 30.0, scale: float = 1.0) -> Phantom:
    """A named phantom (:data:`PHANTOMS`); ``scale`` < 1 shrinks its field (for quick runs)."""
    if name not in PHANTOMS:
        raise InputError(f"unknown phantom {name!r}; choose one of {', '.join(PHANTOMS)}")
    if not 0 < scale <= 2:
        raise InputError(f"phantom scale {scale} must be in (0, 2]")
    return PHANTOMS[name](seed, density, scale)


def simulate(
    phantom: Phantom,
    transmits: Transmits,
    probe: LinearArray | None = None,
    *,
    attenuation: float = 0.5,
    snr_db: float | None = 40.0,
    seed: int = 0,
) -> ChannelData:
    """Channel data of ``phantom``, recorded to just below its deepest scatterer."""
    depth = float(phantom.extent[3]) + 2e-3
    meta = {"truth": phantom.truth(), "n_scatterers": int(phantom.x.size), "seed": seed,
            "snr_db": snr_db}  # fmt: skip
    return simulate_channel_data(phantom.x, phantom.z, phantom.amplitude, transmits, probe,
                                 depth=depth, attenuation=attenuation, snr_db=snr_db, seed=seed,
                                 meta=meta)  # fmt: skip


def plane_waves(n: int, max_deg: float = 16.0) -> Transmits:
    """``n`` plane waves evenly over +-``max_deg``."""
    return Transmits("plane", angles=plane_wave_angles(n, max_deg))


def focused_lines(
    probe: LinearArray, n_lines: int, focus_depth: float, tx_fnumber: float = 2.0
) -> Transmits:
    """``n_lines`` focused transmits at ``focus_depth`` (m), evenly across the array."""
    if n_lines < 1 or focus_depth <= 0:
        raise InputError("focused imaging needs >= 1 line and a focus depth > 0")
    half = (probe.n_elements - 1) * probe.pitch / 2
    xs = np.linspace(-half, half, n_lines) if n_lines > 1 else np.zeros(1)
    return Transmits("focused", focus=np.stack([xs, np.full(n_lines, focus_depth)], 1),
                     tx_fnumber=tx_fnumber)  # fmt: skip


def save_channel_data(data: ChannelData, path: PathType, overwrite: bool = False) -> Path:
    """Write ``data`` as a ``.npz`` (see the module docstring); atomic, never overwrites
    without ``overwrite``."""
    p = Path(path)
    if not p.name.endswith(".npz"):
        raise InputError("channel data are written as .npz; name the file *.npz", p)
    peak = float(np.abs(data.rf).max()) or 1.0
    scale = peak / 32000.0
    pr, tx = data.probe, data.transmits
    arrays = {
        "format_version": np.int64(FORMAT_VERSION),
        "rf": np.round(data.rf / scale).astype(np.int16), "rf_scale": np.float64(scale),
        "t0": np.float64(data.t0), "fs": np.float64(pr.fs), "fc": np.float64(pr.fc),
        "c": np.float64(pr.c), "bandwidth": np.float64(pr.bandwidth),
        "pitch": np.float64(pr.pitch), "element_width": np.float64(pr.element_width),
        "tx_kind": np.str_(tx.kind), "angles": np.asarray(tx.angles, np.float64),
        "focus": np.asarray(tx.focus, np.float64).reshape(-1, 2),
        "tx_fnumber": np.float64(tx.tx_fnumber), "attenuation": np.float64(data.attenuation),
        "meta": np.str_(json.dumps(data.meta)),
    }  # fmt: skip
    with atomic_path(p, overwrite) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return p


_KEYS = ("rf", "rf_scale", "t0", "fs", "fc", "c", "bandwidth", "pitch", "element_width",
         "tx_kind", "angles", "focus", "tx_fnumber", "attenuation", "meta")  # fmt: skip


def load_channel_data(path: PathType) -> ChannelData:
    """Read a channel-data ``.npz`` written by :func:`save_channel_data` (checked: one-line
    errors for a missing key, a wrong shape or a transmit count that disagrees with ``rf``)."""
    p = Path(path)
    if not p.is_file():
        raise InputError("no such channel-data file; write one with 'medimg recon us simulate'", p)
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in _KEYS if k not in z.files]
            if missing:
                raise InputError(f"is not medimg channel data (missing {', '.join(missing)})", p)
            v = {k: z[k] for k in _KEYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"cannot read channel data ({exc})", p) from None
    rf = v["rf"]
    if rf.ndim != 3 or rf.dtype.kind not in "if" or min(rf.shape) < 1:
        raise InputError(f"rf must be (transmits, elements, samples) numbers, got {rf.shape}", p)
    try:
        probe = LinearArray(n_elements=int(rf.shape[1]), pitch=float(v["pitch"]),
                            element_width=float(v["element_width"]), fc=float(v["fc"]),
                            bandwidth=float(v["bandwidth"]), fs=float(v["fs"]),
                            c=float(v["c"]))  # fmt: skip
        tx = Transmits(str(v["tx_kind"]), angles=np.asarray(v["angles"], np.float64),
                       focus=np.asarray(v["focus"], np.float64).reshape(-1, 2),
                       tx_fnumber=float(v["tx_fnumber"]))  # fmt: skip
        meta = json.loads(str(v["meta"]))
    except InputError as exc:
        raise InputError(str(exc), p) from None
    except (ValueError, TypeError) as exc:
        raise InputError(f"bad channel-data header ({exc})", p) from None
    if len(tx) != rf.shape[0]:
        raise InputError(f"{len(tx)} transmits described but rf holds {rf.shape[0]}", p)
    scaled = rf.astype(np.float32) * np.float32(v["rf_scale"])
    return ChannelData(scaled, probe, tx, float(v["t0"]), float(v["attenuation"]), meta)
