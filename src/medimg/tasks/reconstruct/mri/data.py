"""Training pairs for learned MRI reconstruction: simulated from phantoms, or fastMRI HDF5 files.

A sample is a dict of tensors (one slice):

* ``kspace``: complex64 ``(N, H, W)``, undersampled multi-coil k-space (zero where not sampled),
  ``y = M (F S x + n)``;
* ``mask``: float32 ``(H, W)`` (1 = sampled), phase encoding along ``W`` as in fastMRI;
* ``maps``: complex64 ``(N, H, W)`` coil sensitivities with ``sum_c |S_c|^2 = 1`` (the simulated
  ones; used by MoDL and the U-Net during training, ESPIRiT stands in for them at inference);
* ``target``: float32 ``(H, W)``, root-sum-of-squares of the fully sampled, noise-free coil
  images (= ``|x|`` with normalised maps), fastMRI's ``reconstruction_rss``.

Simulation draws everything (phantom kind/contrast, mask offset or lines, coil count, SNR, a
flip) from the per-sample seed that :class:`medimg.engine.SeededSamples` sets before each read,
so a run's data stream is a pure function of ``(seed, step, index)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from medimg.datasets.fastmri import check_fastmri, read_fastmri
from medimg.errors import InputError
from medimg.phantoms.mri import brain_phantom, knee_phantom
from medimg.physics.coils import birdcage_maps
from medimg.physics.masks import equispaced_mask, random_mask
from medimg.physics.mri import fft2c, ifft2c, rss
from medimg.physics.noise import ComplexGaussianNoise

__all__ = [
    "REAL_TRAIN", "FastMRISlices", "PhantomSlices", "RealisticConfig", "RealisticSlices", "SimConfig",
    "load_real_training", "make_mask", "simulate_slice", "smooth_phase",
]  # fmt: skip

MASKS = ("equispaced", "random")
KINDS = ("brain", "knee", "mixed")


@dataclasses.dataclass
class SimConfig:
    """How phantoms become k-space. ``seed_base`` keeps training and held-out phantoms apart."""

    kind: str = "mixed"
    shape: tuple[int, int] = (128, 128)
    coils: int = 8
    mask: str = "equispaced"
    accelerations: tuple[float, ...] = (4.0,)
    center_fraction: float = 0.08
    snr_db: float | None = 30.0
    contrasts: tuple[str, ...] = ("t1", "t2", "pd")
    num_phantoms: int = 200
    seed_base: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"SimConfig.kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.mask not in MASKS:
            raise InputError(f"SimConfig.mask must be one of {', '.join(MASKS)}, got {self.mask!r}")
        if len(self.shape) != 2 or min(self.shape) < 16:
            raise InputError(f"SimConfig.shape must be (H, W) with sides >= 16, got {self.shape}")
        if self.coils < 1 or self.num_phantoms < 1 or not self.accelerations:
            raise InputError("SimConfig needs coils >= 1, num_phantoms >= 1 and an acceleration")


def make_mask(
    kind: str, shape: tuple[int, int], acceleration: float, center_fraction: float, seed: int
) -> torch.Tensor:
    """A fastMRI-style column mask ``(H, W)`` of ``kind`` ``equispaced`` or ``random``."""
    if kind not in MASKS:
        raise InputError(f"mask kind must be one of {', '.join(MASKS)}, got {kind!r}")
    fn = equispaced_mask if kind == "equispaced" else random_mask
    return fn(tuple(shape), acceleration, center_fraction, seed=seed)


@lru_cache(maxsize=512)
def _phantom(kind: str, shape: tuple[int, int], seed: int, contrast: str) -> torch.Tensor:
    fn = brain_phantom if kind == "brain" else knee_phantom
    return fn(shape, contrast=contrast, seed=seed).image  # complex64 (H, W), max |x| = 1


def simulate_slice(
    image: torch.Tensor,
    coils: int,
    mask: torch.Tensor,
    snr_db: float | None = None,
    seed: int = 0,
    maps: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Multi-coil k-space of a complex ``(H, W)`` image: ``y = M (F S x + n)`` (birdcage maps
    of ``coils`` unless normalised ``maps`` ``(N, H, W)`` are given).

    Returns the sample dict described in the module docstring.
    """
    maps = birdcage_maps(coils, tuple(image.shape)) if maps is None else maps
    full = fft2c(maps * image)  # (N, H, W): F S x, fully sampled
    if snr_db is not None:  # SNR relative to the fully sampled signal, not the masked one
        full = ComplexGaussianNoise(snr_db=snr_db, seed=seed)(full[None])[0]
    return {
        "kspace": (full * mask).to(torch.complex64),
        "mask": mask.float(),
        "maps": maps,
        "target": rss(maps * image, 0).float(),  # RSS of the fully sampled coil images
    }


class PhantomSlices(Dataset):
    """``n`` simulated slices; sample ``i`` uses phantom ``seed_base + i % num_phantoms``.

    The rest (contrast, acceleration, mask seed, noise seed, left-right flip, brain or knee for
    ``kind="mixed"``) is drawn from the global torch generator, which the engine seeds per
    ``(seed, step, index)``; call :meth:`sample` with an explicit seed outside the engine.
    """

    def __init__(self, config: SimConfig, n: int) -> None:
        self.cfg, self.n = config, int(n)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        seed = int(torch.randint(0, 2**31 - 1, (1,)))
        return self.sample(index, seed)

    def sample(self, index: int, seed: int) -> dict[str, torch.Tensor]:
        """Slice ``index`` with its random choices drawn from ``seed``."""
        cfg = self.cfg
        rng = np.random.default_rng([seed, index])
        pid = cfg.seed_base + index % cfg.num_phantoms
        kind = cfg.kind if cfg.kind != "mixed" else ("brain", "knee")[pid % 2]
        contrast = cfg.contrasts[int(rng.integers(len(cfg.contrasts)))]
        image = _phantom(kind, tuple(cfg.shape), pid, contrast)
        if rng.random() < 0.5:
            image = image.flip(-1)
        accel = float(cfg.accelerations[int(rng.integers(len(cfg.accelerations)))])
        mseed = int(rng.integers(2**31))
        mask = make_mask(cfg.mask, tuple(cfg.shape), accel, cfg.center_fraction, mseed)
        return simulate_slice(image, cfg.coils, mask, cfg.snr_db, seed=int(rng.integers(2**31)))


class FastMRISlices(Dataset):
    """Slices of fastMRI-layout multi-coil files.

    Files with a ``mask`` are used as stored (already undersampled); fully sampled files are
    undersampled here with a ``mask_kind`` mask at ``acceleration`` drawn from the per-sample
    seed. ``target`` is ``reconstruction_rss`` when it has the k-space's ``(H, W)``, else the
    RSS of the stored k-space (ground truth only for fully sampled files). ``maps`` are not
    known for real data: they are left out, so only the VarNet (learned maps) trains on them.
    """

    def __init__(
        self,
        files: Sequence[str | Path],
        mask_kind: str = "equispaced",
        acceleration: float = 4.0,
        center_fraction: float = 0.08,
    ) -> None:
        self.files = [Path(f) for f in files]
        if not self.files:
            raise InputError("FastMRISlices needs at least one .h5 file")
        self.mask_kind, self.acceleration, self.cf = mask_kind, acceleration, center_fraction
        self.index: list[tuple[Path, int]] = []
        first: tuple[int, ...] | None = None
        for f in self.files:  # every file checked here, not minutes into training
            vol = read_fastmri(f, slices=slice(0, 1))
            if not vol.multicoil:
                raise InputError("learned MRI models need multi-coil k-space (S, N, H, W)", f)
            shape = check_fastmri(f)
            if first is not None and shape[1:] != first[1:]:
                raise InputError(
                    f"k-space (coils, H, W) = {shape[1:]} differs from the first file's "
                    f"{first[1:]}; train on files of one size (they are batched together)", f,
                )  # fmt: skip
            first = first or shape
            recon = vol.reconstruction
            if vol.mask is not None and (recon is None or recon.shape[-2:] != shape[-2:]):
                raise InputError("no ground truth: undersampled file without matching RSS", f)
            self.index += [(f, s) for s in range(shape[0])]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        path, s = self.index[i]
        vol = read_fastmri(path, slices=s)
        k = torch.from_numpy(vol.kspace[0])  # (N, H, W)
        shape = tuple(k.shape[-2:])
        target = None
        if vol.reconstruction is not None and vol.reconstruction.shape[-2:] == shape:
            target = torch.from_numpy(vol.reconstruction[0])
        if vol.mask is None:
            target = rss(ifft2c(k), 0) if target is None else target
            seed = int(torch.randint(0, 2**31 - 1, (1,)))
            mask = make_mask(self.mask_kind, shape, self.acceleration, self.cf, seed)
        else:
            mask = torch.from_numpy(np.asarray(vol.mask, np.float32)).expand(shape).clone()
        if target is None:
            raise InputError("no ground truth: undersampled file without matching RSS", path)
        return {"kspace": k * mask, "mask": mask, "target": target.float()}


def smooth_phase(
    shape: tuple[int, int], rng: np.random.Generator, max_rad: float = np.pi, order: int = 3
) -> torch.Tensor:
    """A smooth random phase map ``(H, W)`` in radians: a random polynomial of ``order`` in
    ``(y, x)`` (B0 offsets, coil-combination and RF phase vary slowly over a slice), scaled so
    that its peak-to-peak span is uniform in ``[0.2, 1] * 2 max_rad``, plus a random offset."""
    h, w = shape
    y, x = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    phi = np.zeros(shape)
    for i in range(order + 1):
        for j in range(order + 1 - i):
            if i + j:
                phi += rng.normal() / (i + j) * y**i * x**j  # higher orders weaker
    span = float(np.ptp(phi)) or 1.0
    phi = (phi - phi.min()) / span * (2 * max_rad * rng.uniform(0.2, 1.0))
    return torch.from_numpy(phi + rng.uniform(-np.pi, np.pi)).float()


# --- Realistic training data: real magnitude slices + phantoms, everything randomised ---------

#: Real MR sources on the *training* side (``medimg.datasets.real_sources``): Colin27 with and
#: without scalp, the pydeface mean head (face and scalp) and dipy's T1 / S0 slices. The
#: real-image validation subjects of ``bench/bench_mri_real.py`` (ITK KmeansTest, nibabel's
#: anatomical crop) are never listed here.
REAL_TRAIN: tuple[tuple[str, str], ...] = (
    ("mricron-data", "ch2.nii.gz"),
    ("mricron-data", "ch2bet.nii.gz"),
    ("pydeface", "mean_reg2mean.nii.gz"),
    ("dipy", "t1_coronal_slice.npy"),
    ("dipy", "S0_10slices.nii.gz"),
)
REAL_MASKS = ("equispaced", "random", "poisson")
REAL_CONTRASTS = ("t1", "t2", "pd")


@dataclasses.dataclass
class RealisticConfig:
    """Ranges of :class:`RealisticSlices`; each sample draws uniformly within them."""

    size_range: tuple[int, int] = (128, 384)  # H and W drawn apart: non-square matrices
    square_prob: float = 0.4
    coil_range: tuple[int, int] = (4, 32)
    surface_prob: float = 0.4  # surface array (one side) instead of a surrounding array
    snr_db_range: tuple[float, float] = (20.0, 40.0)
    noiseless_prob: float = 0.15
    accel_range: tuple[float, float] = (4.0, 8.0)
    acs_range: tuple[float, float] = (0.04, 0.10)
    masks: tuple[str, ...] = REAL_MASKS
    strip_prob: float = 0.3  # remove the scalp ring (a skull-stripped-looking head)
    phantom_prob: float = 0.3  # phantom instead of a real slice (always 1 without real data)

    def __post_init__(self) -> None:
        lo, hi = self.size_range
        if not 32 <= lo <= hi or not 1 <= self.coil_range[0] <= self.coil_range[1]:
            raise InputError("RealisticConfig needs 32 <= size_range[0] <= [1] and coils >= 1")
        if not 1 <= self.accel_range[0] <= self.accel_range[1]:
            raise InputError(f"accel_range must be 1 <= lo <= hi, got {self.accel_range}")
        if not 0 < self.acs_range[0] <= self.acs_range[1] < 1:
            raise InputError(f"acs_range must be in (0, 1), got {self.acs_range}")
        bad = set(self.masks) - set(REAL_MASKS)
        if bad or not self.masks:
            raise InputError(f"masks must be among {', '.join(REAL_MASKS)}, got {self.masks}")


def load_real_training(min_fill: float = 0.15) -> dict[str, np.ndarray]:
    """Source name -> ``(S, H, W)`` float32 magnitude slices (peak ~1) of :data:`REAL_TRAIN`,
    fetched into ``$MEDIMG_DATA_CACHE`` on first use; slices whose head covers less than
    ``min_fill`` of the image are left out. Axial, coronal and sagittal slices of 3D heads."""
    import nibabel as nib

    from medimg.datasets.real_sources import real_file

    out: dict[str, np.ndarray] = {}
    for source, rel in REAL_TRAIN:
        path = real_file(source, rel)
        vol = np.load(path)[None] if rel.endswith(".npy") else nib.load(path).get_fdata()
        vol = np.asarray(np.squeeze(vol), np.float32)
        slices = []
        if vol.ndim == 2:
            slices = [vol]
        else:
            for axis in range(3) if min(vol.shape) > 32 else (2,):
                step = max(1, vol.shape[axis] // 24)
                slices += [np.take(vol, i, axis) for i in range(0, vol.shape[axis], step)]
        keep = []
        for s in slices:
            s = np.clip(s, 0, None)
            peak = np.percentile(s, 99.9)
            if peak > 0 and (s > 0.1 * peak).mean() >= min_fill:
                keep.append(np.rot90(s / peak).clip(0, 1.2).astype(np.float32))
        if keep:  # sizes differ between views: kept as an object array of slices
            arr = np.empty(len(keep), dtype=object)
            arr[:] = keep
            out[f"{source}:{rel}"] = arr
    return out


def remap_contrast(mag: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A random intensity remap of a magnitude image (peak ~1) towards ``kind`` contrast:
    ``t1`` a gamma in [0.7, 1.4]; ``t2`` tissue inverted inside the head (fluid bright, WM
    dark); ``pd`` flattened (gamma 0.3-0.6). Then a smooth multiplicative bias field (+-20 %)."""
    x = np.clip(mag, 0, None) / max(float(mag.max()), 1e-12)
    fg = ndimage.binary_fill_holes(ndimage.binary_opening(x > 0.08, iterations=2))
    if kind == "t1":
        y = x ** rng.uniform(0.7, 1.4)
    elif kind == "t2":
        y = np.where(fg, (1.05 - x).clip(0, 1) ** rng.uniform(0.8, 1.6), 0.0) + 0.3 * x * fg
    elif kind == "pd":
        y = x ** rng.uniform(0.3, 0.6)
    else:
        raise InputError(f"contrast must be one of {', '.join(REAL_CONTRASTS)}, got {kind!r}")
    bias = 1 + 0.2 * np.tanh(smooth_phase(x.shape, rng, max_rad=1.0, order=2).numpy() - 1.0)
    y = y * bias
    return (y / max(float(y.max()), 1e-12)).astype(np.float32)


def strip_scalp(mag: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The head without its outer shell: the foreground eroded by 5-9 % of the matrix (scalp
    fat and skull), as in a skull-stripped image."""
    fg = ndimage.binary_fill_holes(mag > 0.1 * mag.max())
    it = max(1, round(min(mag.shape) * rng.uniform(0.05, 0.09)))
    return (mag * ndimage.binary_erosion(fg, iterations=it)).astype(np.float32)


def random_coil_maps(
    num_coils: int, shape: tuple[int, int], rng: np.random.Generator, surface: bool
) -> torch.Tensor:
    """A random array: loops around the FOV (birdcage-like: random rotation, radius 1.1-1.6,
    jittered positions), or a ``surface`` array of loops along one random side."""
    from medimg.physics.coils import loop_maps

    if surface:  # a curved row of loops just outside one side of the FOV
        side = rng.uniform(0, 2 * np.pi)
        spread = rng.uniform(0.6, 1.6)  # angular extent, radians
        angles = side + np.linspace(-spread / 2, spread / 2, num_coils)
        radius = rng.uniform(1.05, 1.3, num_coils)
    else:
        angles = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(num_coils) / num_coils
        angles = angles + rng.normal(0, 0.15, num_coils)
        radius = rng.uniform(1.1, 1.6) + rng.normal(0, 0.05, num_coils)
    centres = [(float(r * np.cos(a)), float(r * np.sin(a))) for r, a in zip(radius, angles)]
    return loop_maps(centres, shape)


def realistic_mask(
    kind: str, shape: tuple[int, int], acceleration: float, acs: float, seed: int
) -> torch.Tensor:
    """``equispaced`` / ``random`` column masks or a 2D variable-density ``poisson`` disc mask
    (as for 3D Cartesian phase-encode planes), ``(H, W)``."""
    from medimg.physics.masks import poisson_disc_mask

    if kind == "poisson":
        return poisson_disc_mask(shape, acceleration, acs, seed=seed)
    return make_mask(kind, shape, acceleration, acs, seed)


def _fit(img: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """``img`` into a ``shape`` matrix: a random 90-degree turn and flip, zoomed so the head
    fills 70-95 % of the shorter side (a random FOV), centred with a small random shift."""
    img = np.rot90(img, int(rng.integers(4)))
    img = img[:, ::-1] if rng.random() < 0.5 else img
    ys, xs = np.nonzero(img > 0.05 * img.max())
    if ys.size:
        img = img[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    scale = rng.uniform(0.7, 0.95) * min(shape[0] / img.shape[0], shape[1] / img.shape[1])
    z = ndimage.zoom(np.asarray(img, np.float64), scale, order=1).clip(0, None)
    z = z[: shape[0], : shape[1]]
    out = np.zeros(shape, np.float32)
    oy = (shape[0] - z.shape[0]) // 2 + int(rng.integers(-3, 4))
    ox = (shape[1] - z.shape[1]) // 2 + int(rng.integers(-3, 4))
    oy, ox = int(np.clip(oy, 0, shape[0] - z.shape[0])), int(np.clip(ox, 0, shape[1] - z.shape[1]))
    out[oy : oy + z.shape[0], ox : ox + z.shape[1]] = z
    return out


class RealisticSlices(Dataset):
    """Training slices that look like real acquisitions, each a pure function of its seed.

    Sample ``i`` with ``seed`` draws: a real magnitude slice of ``real`` (e.g.
    :func:`load_real_training`) or a brain/knee phantom (``phantom_prob``, or always without
    real data); a matrix ``H x W`` in ``size_range`` (non-square unless ``square_prob``); a
    random turn/flip/FOV; with or without scalp; a T1/T2/PD-like intensity remap with a bias
    field; a smooth random phase; 4-32 coils in a surrounding or a surface array at random
    positions; k-space noise at 20-40 dB SNR or none; an equispaced / random / Poisson-disc
    mask at 4-8x with 4-10 % ACS. The sample dict is that of :func:`simulate_slice` (with the
    drawn maps); :meth:`draw` returns the drawn factors beside it. Sizes differ between
    samples: batch size 1 (or group by shape).
    """

    def __init__(
        self,
        config: RealisticConfig | None = None,
        n: int = 1000,
        real: dict[str, np.ndarray] | None = None,
        seed_base: int = 0,
    ) -> None:
        self.cfg, self.n, self.seed_base = config or RealisticConfig(), int(n), int(seed_base)
        self.real = [s for vol in (real or {}).values() for s in vol]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        seed = int(torch.randint(0, 2**31 - 1, (1,)))
        return self.draw(index, seed)[0]

    def draw(self, index: int, seed: int) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
        """Sample ``index`` drawn from ``seed``, and its factors (for checks and metadata)."""
        cfg = self.cfg
        rng = np.random.default_rng([self.seed_base, seed, index])
        lo, hi = cfg.size_range
        h = int(rng.integers(lo // 8, hi // 8 + 1)) * 8  # multiples of 8, as scanners choose
        w = h if rng.random() < cfg.square_prob else int(rng.integers(lo // 8, hi // 8 + 1)) * 8
        contrast = REAL_CONTRASTS[int(rng.integers(3))]
        use_phantom = not self.real or rng.random() < cfg.phantom_prob
        if use_phantom:
            kind = ("brain", "knee")[int(rng.integers(2))]
            fn = brain_phantom if kind == "brain" else knee_phantom
            src = fn((min(h, 256), min(w, 256)), contrast=contrast,
                     seed=int(rng.integers(2**31))).image.abs().numpy()  # fmt: skip
            source = f"phantom:{kind}"
        else:
            j = int(rng.integers(len(self.real)))
            src, source = np.asarray(self.real[j], np.float32), f"real:{j}"
        mag = _fit(src, (h, w), rng)
        stripped = bool(rng.random() < cfg.strip_prob) and source != "phantom:knee"
        mag = strip_scalp(mag, rng) if stripped else mag
        if not use_phantom:  # phantoms come in their contrasts already
            mag = remap_contrast(mag, contrast, rng)
        if not float(mag.max()) > 0:  # a field of view with no tissue: draw another slice
            return self.draw(index, (seed + 1_000_003) % (2**31 - 1))
        mag = mag / max(float(mag.max()), 1e-12)
        image = torch.from_numpy(mag) * torch.exp(1j * smooth_phase((h, w), rng))
        coils = int(rng.integers(cfg.coil_range[0], cfg.coil_range[1] + 1))
        surface = bool(rng.random() < cfg.surface_prob)
        maps = random_coil_maps(coils, (h, w), rng, surface)
        snr = None if rng.random() < cfg.noiseless_prob else float(rng.uniform(*cfg.snr_db_range))
        accel = float(rng.uniform(*cfg.accel_range))
        acs = float(rng.uniform(*cfg.acs_range))
        mask_kind = cfg.masks[int(rng.integers(len(cfg.masks)))]
        mask = realistic_mask(mask_kind, (h, w), accel, acs, int(rng.integers(2**31)))
        sample = simulate_slice(image.to(torch.complex64), coils, mask, snr,
                                seed=int(rng.integers(2**31)), maps=maps)  # fmt: skip
        info = {"source": source, "shape": (h, w), "contrast": contrast, "stripped": stripped,
                "coils": coils, "array": "surface" if surface else "surround", "snr_db": snr,
                "acceleration": accel, "acs": acs, "mask": mask_kind}  # fmt: skip
        return sample, info
