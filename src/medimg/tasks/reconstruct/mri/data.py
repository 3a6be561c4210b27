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
from torch.utils.data import Dataset

from medimg.datasets.fastmri import check_fastmri, read_fastmri
from medimg.errors import InputError
from medimg.phantoms.mri import brain_phantom, knee_phantom
from medimg.physics.coils import birdcage_maps
from medimg.physics.masks import equispaced_mask, random_mask
from medimg.physics.mri import fft2c, ifft2c, rss
from medimg.physics.noise import ComplexGaussianNoise

__all__ = ["FastMRISlices", "PhantomSlices", "SimConfig", "make_mask", "simulate_slice"]

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
) -> dict[str, torch.Tensor]:
    """Multi-coil k-space of a complex ``(H, W)`` image: ``y = M (F S x + n)`` (birdcage maps).

    Returns the sample dict described in the module docstring.
    """
    maps = birdcage_maps(coils, tuple(image.shape))
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
