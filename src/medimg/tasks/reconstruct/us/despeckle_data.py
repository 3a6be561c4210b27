"""Training pairs for the despeckling network: B-mode-like images whose speckle-free truth is known.

The channel-data simulator (:mod:`medimg.physics.ultrasound`) takes ~30 s a frame, too slow for
thousands of training images, so pairs come from an image-domain model of the same physics
(first-order Born scattering seen through a band-limited point-spread function):

1. an echogenicity map ``A`` (amplitude): depth layers with wavy boundaries, slow texture,
   ellipses (anechoic cysts, hypo/hyper-echoic lesions), thin bright boundaries, bright points;
2. a complex Gaussian scatterer field (a random fraction of pixels scatter: at low density the
   speckle is not fully developed) times ``A``;
3. convolution with a Gaussian PSF (lateral and axial FWHM in pixels, randomised; the
   simulator's own PSF is 0.5-1.2 mm lateral x 0.2 mm axial) -> the envelope ``|.|`` plus
   band-limited electronic noise, times a depth-dependent gain error (TGC);
4. log compression with a random dynamic range (40-130 dB: scanners' grey maps often show
   speckle at low contrast) and gain, a random grey-map gamma, 8-bit quantisation, a little
   interpolation blur (scan conversion) and, on the input only, sometimes the scanner's own
   speckle smoothing (many scanners despeckle before export).

Target: the echogenicity seen through the PSF magnitude without speckle, i.e. the *mean*
envelope ``sqrt(pi)/2 * sqrt(A^2 * |h|^2 + noise power)`` (so the mean brightness of a region
is kept), through the same gain, log compression and blur. Randomising the PSF width, density,
dynamic range, gain and noise puts scanners' 8-bit scan-converted B-modes inside the range.
Written here (no package makes such pairs); the statistics are checked against the channel-data
simulator in ``bench/bench_us_despeckle.py --check-simulator``.

Arrays are ``(X lateral, Z depth)`` as medimg's 2D images, values in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["PairParams", "echogenicity_map", "random_params", "speckle_pair"]

_FWHM_PER_SIGMA = 2 * math.sqrt(2 * math.log(2))


@dataclass
class PairParams:
    """The knobs of one pair (randomised by :func:`random_params`)."""

    fwhm_lateral: float = 4.0  # PSF amplitude FWHM, pixels
    fwhm_axial: float = 2.5
    density: float = 1.0  # fraction of pixels that scatter
    dynamic_range: float = 60.0  # dB mapped onto [0, 1]
    median_level: float = 0.55  # where the median target brightness lands in [0, 1]
    snr_db: float = 40.0  # mean signal power over noise power
    tgc_db: float = 0.0  # peak depth-dependent gain error
    quantise: bool = True  # 8-bit
    blur: float = 0.0  # scan-conversion blur sigma, pixels
    smooth: float = 0.0  # the scanner's own speckle smoothing (input only), sigma in pixels
    gamma: float = 1.0  # grey map: out = in ** gamma (input and target)

    def as_dict(self) -> dict:
        return asdict(self)


def random_params(rng: np.random.Generator) -> PairParams:
    """Random knobs covering the simulator and common scanners' displayed B-modes."""
    lat = float(np.exp(rng.uniform(math.log(1.5), math.log(12.0))))
    return PairParams(
        fwhm_lateral=lat,
        fwhm_axial=float(max(1.0, lat * rng.uniform(0.3, 1.0))),
        density=float(1.0 if rng.random() < 0.6 else 10 ** rng.uniform(-1.3, 0)),
        dynamic_range=float(np.exp(rng.uniform(math.log(40), math.log(130)))),
        median_level=float(rng.uniform(0.3, 0.75)),
        snr_db=float(rng.uniform(15, 45)),
        tgc_db=float(rng.uniform(0, 6)),
        quantise=bool(rng.random() < 0.8),
        blur=float(rng.uniform(0, 0.8) if rng.random() < 0.5 else 0.0),
        smooth=float(rng.uniform(0.3, 1.5) if rng.random() < 0.4 else 0.0),
        gamma=float(np.exp(rng.uniform(math.log(0.7), math.log(1.4)))),
    )


def _ellipse(shape: tuple[int, int], rng: np.random.Generator, lo: float, hi: float):
    """Mask of a random rotated ellipse with semi-axes in ``[lo, hi]`` pixels."""
    xx, zz = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    cx, cz = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
    a, b, th = rng.uniform(lo, hi), rng.uniform(lo, hi), rng.uniform(0, math.pi)
    u = (xx - cx) * math.cos(th) + (zz - cz) * math.sin(th)
    v = -(xx - cx) * math.sin(th) + (zz - cz) * math.cos(th)
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def echogenicity_map(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Random tissue echogenicity in dB ``(X, Z)``: layers, texture, lesions, boundaries, points."""
    nx, nz = shape
    x = np.arange(nx)[:, None] / nx
    z = np.arange(nz)[None, :]
    db = np.zeros(shape)
    if rng.random() < 0.1:  # plain speckle: the network must learn to leave it flat
        return db
    for _ in range(int(rng.integers(0, 4))):  # layers below wavy boundaries
        depth = rng.uniform(0, nz) + rng.uniform(-0.3, 0.3) * nz * (x - 0.5)
        depth = depth + rng.uniform(0, 6) * np.sin(2 * math.pi * (rng.uniform(0.5, 2) * x +
                                                                  rng.random()))  # fmt: skip
        below = z >= depth
        db = np.where(below, rng.uniform(-12, 8), db)
        if rng.random() < 0.5:  # a bright specular boundary along it
            line = np.abs(z - depth) <= rng.uniform(0.5, 2.0)
            db = np.where(line, rng.uniform(8, 20), db)
    if rng.random() < 0.6:  # slow texture
        tex = gaussian_filter(rng.standard_normal(shape), rng.uniform(6, 20))
        db += rng.uniform(1, 4) * tex / max(float(tex.std()), 1e-9)
    for _ in range(int(rng.integers(0, 4))):  # lesions and cysts
        level = rng.choice([-60.0, rng.uniform(-20, -4), rng.uniform(4, 15)])
        db = np.where(_ellipse(shape, rng, 3, max(4, min(shape) / 4)), level, db)
    for _ in range(int(rng.integers(0, 3))):  # bright points
        i, k = int(rng.integers(0, nx)), int(rng.integers(0, nz))
        db[i, k] = rng.uniform(20, 30)
    return db


def _gauss(a: np.ndarray, sig: tuple[float, float]) -> np.ndarray:
    return gaussian_filter(a, sig, mode="reflect", truncate=3.0)


def speckle_pair(
    rng: np.random.Generator,
    shape: tuple[int, int] = (96, 96),
    params: PairParams | None = None,
    db_map: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(speckled, clean)`` float32 ``(X, Z)`` images in [0, 1] of one random scene (or the
    given echogenicity ``db_map`` in dB), with ``params`` or random ones."""
    p = params or random_params(rng)
    db = echogenicity_map(shape, rng) if db_map is None else np.asarray(db_map, float)
    amp = 10 ** (db / 20)
    sig = (p.fwhm_lateral / _FWHM_PER_SIGMA, p.fwhm_axial / _FWHM_PER_SIGMA)
    field = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / math.sqrt(2)
    if p.density < 1:
        field *= (rng.random(shape) < p.density) / math.sqrt(p.density)
    scat = amp * field
    s = _gauss(scat.real, sig) + 1j * _gauss(scat.imag, sig)
    # E|s|^2 = (A^2 conv w^2) = sum(w^2) * (A^2 conv the Gaussian of sigma / sqrt 2)
    delta = np.zeros((31, 31))
    delta[15, 15] = 1
    k2 = float((_gauss(delta, sig) ** 2).sum())
    power = k2 * _gauss(amp**2, (sig[0] / math.sqrt(2), sig[1] / math.sqrt(2)))
    noise_power = float(power.mean()) * 10 ** (-p.snr_db / 10)
    noise = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * math.sqrt(
        noise_power / 2
    )
    noise = _gauss(noise.real, (0.7, 0.7)) + 1j * _gauss(noise.imag, (0.7, 0.7))  # band-limited
    noise *= math.sqrt(noise_power / max(float(np.mean(np.abs(noise) ** 2)), 1e-30))
    zz = np.linspace(-1, 1, shape[1])[None, :]
    tgc = 10 ** (p.tgc_db * np.polyval(rng.uniform(-1, 1, 3), zz) / 3 / 20)
    env = np.abs(s + noise) * tgc
    clean = math.sqrt(math.pi) / 2 * np.sqrt(power + noise_power) * tgc
    top_db = 20 * math.log10(max(float(np.median(clean)), 1e-30)) + (1 - p.median_level) * (
        p.dynamic_range
    )
    out = []
    for a, smooth in ((env, p.smooth), (clean, 0.0)):
        img = (20 * np.log10(np.maximum(a, 1e-30)) - top_db + p.dynamic_range) / p.dynamic_range
        img = np.clip(img, 0, 1)
        if p.blur > 0 or smooth > 0:
            img = _gauss(img, (math.hypot(p.blur, smooth),) * 2)
        out.append(img**p.gamma if p.gamma != 1 else img)
    noisy, target = out
    if p.quantise:
        noisy = np.round(noisy * 255) / 255
    return noisy.astype(np.float32), target.astype(np.float32)
