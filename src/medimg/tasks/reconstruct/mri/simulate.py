"""Phantoms -> fastMRI-layout HDF5 files (``medimg recon mri simulate``).

Each file is one volume: a 3D brain- or knee-like phantom (``slices`` thin slabs through the
anatomy), every slice turned into multi-coil k-space ``y = M (F S x + n)`` with birdcage maps
and complex Gaussian noise at ``snr_db`` (:func:`~.data.simulate_slice`). The file holds what a
fastMRI *test* file holds (undersampled ``kspace``, the column ``mask``, ``acceleration`` and
``num_low_frequency`` attributes, the ISMRMRD header) plus ``reconstruction_rss``, the RSS of
the fully sampled noise-free coil images, as ground truth. ``--full`` stores fully sampled
k-space without a mask instead (a fastMRI *train/val* file).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from medimg.datasets.fastmri import write_fastmri
from medimg.errors import InputError
from medimg.phantoms.mri import CONTRASTS, brain_phantom, knee_phantom
from medimg.tasks.reconstruct.mri.data import MASKS, make_mask, simulate_slice

__all__ = ["SimulateSpec", "simulate_volume", "write_simulated_set"]

#: First phantom seed of ``simulate``: unseen in training (0-199) and validation (100000+).
HELD_OUT_SEED = 200_000


@dataclasses.dataclass
class SimulateSpec:
    """What ``simulate`` writes. ``fov_mm`` sets the pixel spacing stored in the header."""

    kind: str = "brain"  # brain, knee or mixed (alternating)
    contrast: str = "t1"
    shape: tuple[int, int] = (128, 128)
    slices: int = 4
    coils: int = 8
    mask: str = "equispaced"
    acceleration: float = 4.0
    center_fraction: float = 0.08
    snr_db: float | None = 30.0
    fov_mm: tuple[float, float, float] = (220.0, 220.0, 4.0)
    full: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("brain", "knee", "mixed"):
            raise InputError(f"kind must be brain, knee or mixed, got {self.kind!r}")
        if self.contrast not in CONTRASTS:
            raise InputError(
                f"contrast must be one of {', '.join(CONTRASTS)}, got {self.contrast!r}"
            )
        if self.mask not in MASKS:
            raise InputError(f"mask must be one of {', '.join(MASKS)}, got {self.mask!r}")
        if self.slices < 1 or self.coils < 1 or min(self.shape) < 16:
            raise InputError("simulate needs slices >= 1, coils >= 1 and H, W >= 16")
        if not self.acceleration >= 1:
            raise InputError(f"acceleration must be >= 1, got {self.acceleration}")


def simulate_volume(spec: SimulateSpec, seed: int) -> dict[str, np.ndarray]:
    """One volume: ``kspace`` complex64 ``(S, N, H, W)``, ``mask`` ``(W,)``, ``target``
    ``(S, H, W)`` and the coil ``maps`` ``(N, H, W)``, all from ``seed``."""
    kind = spec.kind if spec.kind != "mixed" else ("brain", "knee")[seed % 2]
    fn = brain_phantom if kind == "brain" else knee_phantom
    h, w = spec.shape
    if spec.slices == 1:  # the 2D phantom (what the networks train on)
        depth, vol = 1, fn((h, w), contrast=spec.contrast, seed=seed).image[None]
    else:  # slabs through the middle 60 % of a 3D phantom; the slice count sets its depth
        depth = max(4, int(np.ceil(spec.slices / 0.6)))
        vol = fn((depth, h, w), contrast=spec.contrast, seed=seed).image
    first = (depth - spec.slices) // 2
    mask = make_mask(spec.mask, (h, w), spec.acceleration, spec.center_fraction, seed)
    mask = torch.ones_like(mask) if spec.full else mask
    out: dict[str, list[torch.Tensor]] = {"kspace": [], "target": []}
    maps = None
    for s in range(spec.slices):
        img = vol[first + s] / vol[first + s].abs().amax().clamp_min(1e-12)
        sample = simulate_slice(img, spec.coils, mask, spec.snr_db, seed=seed * 1000 + s)
        out["kspace"].append(sample["kspace"])
        out["target"].append(sample["target"])
        maps = sample["maps"]
    return {
        "kspace": torch.stack(out["kspace"]).numpy(),
        "target": torch.stack(out["target"]).numpy(),
        "mask": mask[0].numpy(),
        "maps": maps.numpy(),  # type: ignore[union-attr]
    }


def write_simulated_set(
    out_dir: str | Path,
    spec: SimulateSpec,
    n: int = 4,
    seed: int = HELD_OUT_SEED,
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Write ``n`` volumes ``out_dir/phantom_<seed>.h5`` (phantom seeds ``seed .. seed+n-1``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in tqdm(range(n), desc="simulate", disable=not progress):
        vol = simulate_volume(spec, seed + i)
        path = out / f"phantom_{seed + i:06d}.h5"
        attrs = {"medimg_phantom": spec.kind, "medimg_contrast": spec.contrast,
                 "medimg_seed": seed + i, "medimg_snr_db": float(spec.snr_db or 0.0)}  # fmt: skip
        written.append(
            write_fastmri(
                path,
                vol["kspace"],
                reconstruction=vol["target"],
                mask=None if spec.full else vol["mask"],
                fov_mm=spec.fov_mm,
                acquisition=f"{spec.kind.upper()}_{spec.contrast.upper()}_SIM",
                patient_id=f"phantom_{seed + i}",
                attrs=attrs,
                overwrite=overwrite,
            )
        )
    return written
