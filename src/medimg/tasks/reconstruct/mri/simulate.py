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
from medimg.tasks.reconstruct.mri.data import (
    MASKS,
    RealisticConfig,
    RealisticSlices,
    load_real_training,
    make_mask,
    simulate_slice,
)

__all__ = ["SimulateSpec", "simulate_volume", "write_realistic_set", "write_simulated_set"]

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
        if not 0 < self.center_fraction <= 1:
            raise InputError(f"center_fraction must be in (0, 1], got {self.center_fraction}")
        self.check_size()

    def check_size(self) -> None:
        """Refuse (one line) a volume whose k-space or 3D phantom would not fit in memory."""
        from medimg.io.inputs import check_allocation

        h, w = self.shape
        depth = max(4, int(np.ceil(self.slices / 0.6)))
        check_allocation((self.slices, self.coils, h, w), np.complex64,
                         what="the simulated k-space", copies=4)  # fmt: skip
        check_allocation((depth, h, w), np.complex128, what="the 3D phantom", copies=4)


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
    """Write ``n`` volumes ``out_dir/phantom_<seed>.h5`` (phantom seeds ``seed .. seed+n-1``).

    The set is written beside ``out_dir`` and swapped in whole at the end: an existing non-empty
    ``out_dir`` is refused unless ``overwrite`` (and then replaced only if medimg wrote it), and
    an interrupt leaves the earlier set or nothing."""
    from medimg.io.output import atomic_dir, check_output_dir

    if n < 1 or seed < 0:
        raise InputError(f"simulate needs n >= 1 volumes and a seed >= 0, got n={n}, seed={seed}")
    check_output_dir(out_dir, overwrite)  # refuse before any simulation
    names = [f"phantom_{seed + i:06d}.h5" for i in range(n)]
    with atomic_dir(out_dir, overwrite) as tmp:
        for i in tqdm(range(n), desc="simulate", disable=not progress):
            _write_volume(tmp / names[i], spec, seed + i)
    return [Path(out_dir) / name for name in names]


def _write_volume(path: Path, spec: SimulateSpec, seed: int) -> Path:
    vol = simulate_volume(spec, seed)
    attrs = {"medimg_phantom": spec.kind, "medimg_contrast": spec.contrast,
             "medimg_seed": seed, "medimg_snr_db": float(spec.snr_db or 0.0)}  # fmt: skip
    return write_fastmri(
        path,
        vol["kspace"],
        reconstruction=vol["target"],
        mask=None if spec.full else vol["mask"],
        fov_mm=spec.fov_mm,
        acquisition=f"{spec.kind.upper()}_{spec.contrast.upper()}_SIM",
        patient_id=f"phantom_{seed}",
        attrs=attrs,
    )


def write_realistic_set(
    out_dir: str | Path,
    n: int = 16,
    seed: int = HELD_OUT_SEED,
    *,
    from_real: bool = False,
    config: RealisticConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Write ``n`` one-slice files ``out_dir/realistic_<seed>.h5`` drawn by
    :class:`~.data.RealisticSlices` (each its own matrix size, coil array, contrast, noise and
    mask; the drawn factors are stored as ``medimg_*`` attributes). ``from_real`` mixes in the
    real training-side brains of :data:`~.data.REAL_TRAIN` (fetched on first use); without
    it, phantoms only. The sizes differ between files: for ``evaluate``/``predict`` and as a
    look at the training stream; training draws from :class:`~.data.RealisticSlices` directly.

    Written whole or not at all, as :func:`write_simulated_set`."""
    from medimg.io.output import atomic_dir, check_output_dir

    if n < 1 or seed < 0:
        raise InputError(f"simulate needs n >= 1 slices and a seed >= 0, got n={n}, seed={seed}")
    check_output_dir(out_dir, overwrite)
    real = load_real_training() if from_real else None
    ds = RealisticSlices(config, n=n, real=real)
    names = [f"realistic_{seed + i:06d}.h5" for i in range(n)]
    with atomic_dir(out_dir, overwrite) as tmp:
        for i in tqdm(range(n), desc="simulate", disable=not progress):
            sample, info = ds.draw(i, seed + i)
            attrs = {f"medimg_{k}": ("none" if v is None else str(v)) for k, v in info.items()}
            write_fastmri(tmp / names[i], sample["kspace"][None].numpy(),
                          reconstruction=sample["target"][None].numpy(),
                          mask=sample["mask"].numpy(),  # a line mask is stored as (W,)
                          acquisition="REALISTIC_SIM", patient_id=f"realistic_{seed + i}",
                          attrs={**attrs, "medimg_seed": seed + i})  # fmt: skip
    return [Path(out_dir) / name for name in names]
